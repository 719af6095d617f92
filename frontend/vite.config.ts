/// <reference types="vitest/config" />
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import react from "@vitejs/plugin-react";
import { defineConfig, type Plugin } from "vite";

// The API serves the build from its Python package (server/web/static/), so an editable
// install, the wheel and the container image all find it in one place.
const outDir = resolve(__dirname, "..", "server", "web", "static");

// Precompressed copies of the hashed assets: the server sends `x.js.gz` to clients
// that accept gzip, with no compression work per request.
function precompress(): Plugin {
  return {
    name: "oculab-precompress",
    apply: "build",
    closeBundle() {
      const assets = join(outDir, "assets");
      for (const name of readdirSync(assets)) {
        const path = join(assets, name);
        if (!/\.(js|css|svg|json|map)$/.test(name) || statSync(path).size < 1024) continue;
        writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }));
      }
    },
  };
}

// uPlot makes a number format and reads the time zone as its module is evaluated: ICU's
// first use in a fresh renderer, 15-20 ms of a cold run page's main thread before its
// charts can draw. Made lazy, they cost nothing until uPlot formats a value with them
// (the charts format their own ticks and legend values: features/training/Chart.tsx).
// A uPlot whose source no longer has these lines fails the build, rather than silently
// losing the change.
const UPLOT_LAZY_INTL: [string, string][] = [
  [
    "const numFormatter = new Intl.NumberFormat(domEnv ? nav.language : 'en-US');\nconst fmtNum = val => numFormatter.format(val);",
    "let numFormatter;\nconst fmtNum = val => (numFormatter ??= new Intl.NumberFormat(domEnv ? nav.language : 'en-US')).format(val);",
  ],
  [
    "const localTz = new Intl.DateTimeFormat().resolvedOptions().timeZone;",
    "let localTz;\nconst getLocalTz = () => (localTz ??= new Intl.DateTimeFormat().resolvedOptions().timeZone);",
  ],
  ["else if (tz == localTz)", "else if (tz == getLocalTz())"],
];

function uplotLazyIntl(): Plugin {
  return {
    name: "oculab-uplot-lazy-intl",
    transform(code, id) {
      if (!id.replace(/\\/g, "/").endsWith("/uplot/dist/uPlot.esm.js")) return null;
      let patched = code;
      for (const [from, to] of UPLOT_LAZY_INTL) {
        if (!patched.includes(from)) this.error(`uPlot's source no longer has: ${from}`);
        patched = patched.replace(from, to);
      }
      return { code: patched, map: null };
    },
  };
}

export default defineConfig(({ mode }) => ({
  plugins: [react(), uplotLazyIntl(), precompress()],
  resolve: {
    // React Router's package exports name only its development build (dev warnings
    // and their checks on); a production bundle takes the production one.
    alias:
      mode === "production"
        ? [{ find: /^react-router$/, replacement: resolve(__dirname, "node_modules/react-router/dist/production/index.mjs") }]
        : [],
  },
  build: {
    outDir,
    emptyOutDir: true,
    manifest: true,
    // Everything is a file of its own: the CSP allows no data: URIs.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: "es2022",
  },
  server: {
    // `npm run dev` talks to `oculab standalone` on :8000.
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/auth": "http://127.0.0.1:8000",
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
    restoreMocks: true,
  },
}));

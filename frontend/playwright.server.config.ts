import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// End-to-end tests against a server-mode stack (e2e-server/global-setup.ts): PostgreSQL,
// Redis, `oculab api`, `oculab scheduler` and two `oculab worker` processes.
export default defineConfig({
  ...base,
  testDir: "e2e-server",
  outputDir: "test-results/server-artifacts",
  globalSetup: "./e2e-server/global-setup.ts",
  timeout: 90_000,
});

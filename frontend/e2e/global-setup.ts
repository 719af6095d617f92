// Starts a real `oculab standalone` for the end-to-end tests and stops it afterwards.
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, stopProcess, waitUntilUp } from "./processes";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
export const ADMIN_PASSWORD = "e2e-admin-password-1";
// The server signs in through this real OpenID provider (oidc-provider-mock) as well as
// with local accounts; the SSO test signs in as IDP_USER at its login form.
export const IDP_NAME = "Lab SSO";
export const IDP_USER = {
  sub: "grace-sub",
  preferred_username: "grace",
  name: "Grace Hopper",
  email: "grace@lab.example",
};

export default async function globalSetup(): Promise<() => Promise<void>> {
  const index = join(root, "server", "web", "static", "index.html");
  if (!existsSync(index)) throw new Error(`no web build at ${index}: run \`make frontend\``);
  const oculab = process.env.OCULAB_BIN ?? join(root, ".venv", "bin", "oculab");
  const dataDir = mkdtempSync(join(tmpdir(), "oculab-e2e-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("OCULAB_")) env[key] = value; // the developer's own settings stay out
  }
  Object.assign(env, {
    OCULAB_DATA_DIR: dataDir,
    OCULAB_ADMIN_PASSWORD: ADMIN_PASSWORD,
    OCULAB_SEED_DEMO: "false",
    OCULAB_FSYNC: "false",
    // One CPU-backed slot for the GPU pool: predict and auto-label run there.
    OCULAB_STANDALONE_GPU_SLOTS: "1",
    OCULAB_STANDALONE_CPU_SLOTS: "1",
    // Every test signs in from 127.0.0.1, many in a minute (the SSO callback shares the
    // per-address budget): the defaults (10 and 50 a minute) would fail tests at random.
    OCULAB_LOGIN_RATE_LIMIT_PER_MINUTE: "1000",
    OCULAB_LOGIN_ADDRESS_RATE_LIMIT_PER_MINUTE: "1000",
  });
  const logDir = join(here, "..", "test-results");
  mkdirSync(logDir, { recursive: true });
  const log = createWriteStream(join(logDir, "server.log"));

  const python = process.env.OCULAB_PYTHON ?? join(dirname(oculab), "python");
  const idpPort = await freePort();
  const idpUrl = `http://127.0.0.1:${idpPort}`;
  const idp = spawn(
    python,
    [
      "-m",
      "oidc_provider_mock",
      "--host",
      "127.0.0.1",
      "--port",
      String(idpPort),
      "--user-claims",
      JSON.stringify(IDP_USER),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const idpLog = createWriteStream(join(logDir, "idp.log"));
  idp.stdout?.pipe(idpLog);
  idp.stderr?.pipe(idpLog);
  try {
    await waitUntilUp(idpUrl, idp, 30, "/.well-known/openid-configuration");
  } catch (error) {
    idp.kill("SIGKILL");
    throw new Error(`${String(error)}; see frontend/test-results/idp.log`);
  }
  Object.assign(env, {
    OCULAB_OIDC_ISSUER: idpUrl,
    OCULAB_OIDC_CLIENT_ID: "oculab-e2e",
    OCULAB_OIDC_CLIENT_SECRET: "e2e-client-secret",
    OCULAB_OIDC_DISPLAY_NAME: IDP_NAME,
  });
  const server = spawn(oculab, ["standalone", "--host", "127.0.0.1", "--port", String(port)], {
    cwd: dataDir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout?.pipe(log);
  server.stderr?.pipe(log);
  try {
    await waitUntilUp(url, server, 90);
  } catch (error) {
    server.kill("SIGKILL");
    idp.kill("SIGKILL");
    throw new Error(`${String(error)}; see frontend/test-results/server.log`);
  }
  process.env.OCULAB_E2E_URL = url;
  process.env.OCULAB_E2E_PASSWORD = ADMIN_PASSWORD;
  process.env.OCULAB_E2E_IDP_URL = idpUrl;

  return async () => {
    await stopProcess(server);
    await stopProcess(idp);
    log.end();
    idpLog.end();
    rmSync(dataDir, { recursive: true, force: true });
  };
}

// Starts Oculab in server mode for e2e-server/: a fresh PostgreSQL database on the
// shared 127.0.0.1:5432 (dropped afterwards), Redis database 11 (no other test uses
// it; flushed before and after), then `oculab migrate`, `oculab create-admin`,
// `oculab api`, `oculab scheduler` and two `oculab worker --pool cpu` processes with
// short heartbeats, so a killed worker's job moves on within seconds.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, type WriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, stopProcess, waitUntilUp } from "../e2e/processes";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const ADMIN_PASSWORD = "e2e-server-admin-password-1";
const PG = process.env.OCULAB_TEST_POSTGRES_URL ?? "postgresql://postgres@127.0.0.1:5432";
const REDIS = "redis://127.0.0.1:6379/11";

export default async function globalSetup(): Promise<() => Promise<void>> {
  if (!existsSync(join(root, "server", "web", "static", "index.html"))) {
    throw new Error("no web build: run `make frontend`");
  }
  const oculab = process.env.OCULAB_BIN ?? join(root, ".venv", "bin", "oculab");
  const python = process.env.OCULAB_PYTHON ?? join(dirname(oculab), "python");
  const py = (code: string) => {
    const run = spawnSync(python, ["-c", code], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`${code}\n${run.stderr}`);
  };
  const database = `oculab_e2e_server_${process.pid}_${Date.now().toString(36)}`;
  const admin = `import psycopg; c = psycopg.connect("${PG}/postgres", autocommit=True)`;
  const flush = `import redis; redis.Redis.from_url("${REDIS}").flushdb()`;
  py(`${admin}; c.execute('CREATE DATABASE "${database}"')`);
  py(flush);

  const dataDir = mkdtempSync(join(tmpdir(), "oculab-e2e-server-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("OCULAB_")) env[key] = value;
  }
  Object.assign(env, {
    OCULAB_MODE: "server",
    OCULAB_DATABASE_URL: `${PG}/${database}`,
    OCULAB_REDIS_URL: REDIS,
    OCULAB_DATA_DIR: dataDir,
    OCULAB_SECRET_KEY: `e2e-server-${"k".repeat(40)}`,
    OCULAB_ADMIN_PASSWORD: ADMIN_PASSWORD,
    OCULAB_FSYNC: "false",
    OCULAB_HEARTBEAT_INTERVAL_SECONDS: "0.5",
    OCULAB_HEARTBEAT_TIMEOUT_SECONDS: "3",
    OCULAB_SCHEDULER_INTERVAL_SECONDS: "0.25",
    OCULAB_MESSAGE_CHECK_GRACE_SECONDS: "1",
    OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS: "5",
    OCULAB_LOGIN_RATE_LIMIT_PER_MINUTE: "1000",
    OCULAB_LOGIN_ADDRESS_RATE_LIMIT_PER_MINUTE: "1000",
  });
  const logDir = join(here, "..", "test-results", "server-mode");
  mkdirSync(logDir, { recursive: true });
  const logs: WriteStream[] = [];
  const children: ChildProcess[] = [];
  const start = (name: string, args: string[]) => {
    const log = createWriteStream(join(logDir, `${name}.log`));
    logs.push(log);
    const child = spawn(oculab, args, { cwd: dataDir, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    return child;
  };
  const once = (args: string[]) => {
    const run = spawnSync(oculab, args, { cwd: dataDir, env, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`oculab ${args.join(" ")}: ${run.stdout}${run.stderr}`);
  };

  const teardown = async () => {
    await Promise.all(children.map(stopProcess));
    for (const log of logs) log.end();
    py(`${admin}; c.execute('DROP DATABASE IF EXISTS "${database}" WITH (FORCE)')`);
    py(flush);
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    once(["migrate"]);
    once(["create-admin", "--username", "admin"]);
    const api = start("api", ["api", "--host", "127.0.0.1", "--port", String(port)]);
    start("scheduler", ["scheduler"]);
    for (const n of [1, 2]) start(`worker-${n}`, ["worker", "--pool", "cpu", "--slots", "1", "--metrics-port", "0"]);
    await waitUntilUp(url, api, 90);
  } catch (error) {
    await teardown();
    throw new Error(`${String(error)}; see frontend/test-results/server-mode/*.log`);
  }
  process.env.OCULAB_E2E_URL = url;
  process.env.OCULAB_E2E_PASSWORD = ADMIN_PASSWORD;
  return teardown;
}

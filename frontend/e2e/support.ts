// Helpers for the project, gallery and SSO end-to-end tests: API calls as the signed-in
// browser (cookie + CSRF), a small zip writer for dataset fixtures, folders on disk.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { crc32 } from "node:zlib";
import { expect, type Page } from "@playwright/test";
import { PASSWORD, signIn } from "./fixtures";

export async function signInAsAdmin(page: Page): Promise<void> {
  await page.goto("/signin");
  await signIn(page, PASSWORD());
  await expect(page).toHaveURL(/\/projects$/);
}

async function csrf(page: Page): Promise<string> {
  return (await page.context().cookies()).find((c) => c.name === "oculab_csrf")?.value ?? "";
}

/** JSON API call with the page's session; fails the test on an unexpected status. */
export async function apiCall<T>(
  page: Page,
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
  path: string,
  data?: unknown,
  expected = [200, 201, 202, 204],
): Promise<T> {
  const response = await page.request.fetch(path, {
    method,
    data: data === undefined ? undefined : (data as object),
    headers: method === "GET" ? {} : { "X-CSRF-Token": await csrf(page) },
  });
  expect(expected, `${method} ${path}: ${response.status()} ${await response.text()}`).toContain(response.status());
  return (response.status() === 204 ? undefined : await response.json()) as T;
}

export interface ProjectBody {
  id: number;
  name: string;
}

export async function createProject(page: Page, name: string, classes = ["shape"]): Promise<ProjectBody> {
  return apiCall<ProjectBody>(page, "POST", "/api/projects", { name, classes });
}

/** A local account (the admin creates it) with a password. */
export async function createUser(page: Page, username: string, password: string): Promise<{ id: number }> {
  return apiCall<{ id: number }>(page, "POST", "/api/admin/users", { username, password, is_admin: false });
}

export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1000)}`;
}

/** Writes files (relative path → bytes) under a new temp folder `root`; returns its path. */
export function writeFolder(root: string, files: Record<string, Buffer | string>): string {
  const base = join(mkdtempSync(join(tmpdir(), "oculab-e2e-files-")), root);
  for (const [path, body] of Object.entries(files)) {
    const full = join(base, path);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, body);
  }
  return base;
}

/** A zip of stored (uncompressed) entries: enough for dataset fixtures. */
export function zip(files: Record<string, Buffer | string>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === "string" ? Buffer.from(content, "utf8") : content;
    const nameBytes = Buffer.from(name, "utf8");
    const crc = crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // date: 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, nameBytes);
    locals.push(local, nameBytes, data);
    offset += local.length + nameBytes.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  const count = Object.keys(files).length;
  end.writeUInt16LE(count, 8);
  end.writeUInt16LE(count, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

/** The names in a zip's central directory. */
export function zipNames(buffer: Buffer): string[] {
  const end = buffer.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buffer.readUInt16LE(end + 10);
  let at = buffer.readUInt32LE(end + 16);
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const nameLength = buffer.readUInt16LE(at + 28);
    const extra = buffer.readUInt16LE(at + 30);
    const comment = buffer.readUInt16LE(at + 32);
    names.push(buffer.subarray(at + 46, at + 46 + nameLength).toString("utf8"));
    at += 46 + nameLength + extra + comment;
  }
  return names;
}

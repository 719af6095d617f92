// Shared by the end-to-end tests: the server's URL, sign-in, screenshots, and a page
// that fails the test on a script error or a Content-Security-Policy violation.
import { crc32, deflateSync } from "node:zlib";
import { expect, type Page, test as base } from "@playwright/test";

export const SCREENSHOTS = "test-results/screenshots";

export const test = base.extend<{ problems: string[] }>({
  // eslint-disable-next-line no-empty-pattern -- Playwright reads a fixture's dependencies from this pattern
  baseURL: async ({}, use) => {
    const url = process.env.OCULAB_E2E_URL;
    if (!url) throw new Error("OCULAB_E2E_URL is unset: run through playwright.config.ts");
    await use(url);
  },
  problems: [
    async ({ page }, use) => {
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) {
        problems.push(`CSP: ${message.text()}`);
      }
    });
      await use(problems);
      expect(problems, "script errors or CSP violations on the page").toEqual([]);
    },
    { auto: true },
  ],
});
export { expect };

export const PASSWORD = () => process.env.OCULAB_E2E_PASSWORD ?? "";

export async function signIn(page: Page, password = PASSWORD()): Promise<void> {
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${SCREENSHOTS}/${name}.png`, fullPage: true });
}

/** A small valid PNG of one colour: distinct seeds give distinct files (sha256). */
export function png(seed: number, width = 64, height = 48): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body) >>> 0, body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) {
    row.set([(seed * 37) % 256, (seed * 91 + x) % 256, (seed * 13) % 256], 1 + x * 3);
  }
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

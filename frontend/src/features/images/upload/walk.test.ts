import { describe, expect, it } from "vitest";
import {
  type DirectoryEntryLike,
  type EntryLike,
  type FileEntryLike,
  fromInput,
  type ItemLike,
  takeDrop,
  walkEntries,
} from "./walk";

function fileEntry(fullPath: string, body = "x"): FileEntryLike {
  const name = fullPath.split("/").at(-1) ?? fullPath;
  return {
    isFile: true,
    isDirectory: false,
    name,
    fullPath,
    file: (ok) => ok(new File([body], name, { type: "image/png" })),
  };
}

/** A folder whose reader answers in chunks of `chunk`, then an empty list (as Chrome does). */
function dirEntry(fullPath: string, children: EntryLike[], chunk = 100): DirectoryEntryLike & { reads: number } {
  const name = fullPath.split("/").at(-1) ?? fullPath;
  const dir = {
    isFile: false,
    isDirectory: true,
    name,
    fullPath,
    reads: 0,
    createReader: () => {
      let offset = 0;
      return {
        readEntries: (ok: (entries: EntryLike[]) => void) => {
          dir.reads += 1;
          const next = children.slice(offset, offset + chunk);
          offset += next.length;
          queueMicrotask(() => ok(next));
        },
      };
    },
  };
  return dir;
}

describe("the folder walker", () => {
  it("asks for a folder's files all at once and keeps their order", async () => {
    let pending = 0;
    let most = 0;
    const slow = (fullPath: string): FileEntryLike => {
      const name = fullPath.split("/").at(-1) ?? fullPath;
      return {
        isFile: true,
        isDirectory: false,
        name,
        fullPath,
        file: (ok) => {
          pending += 1;
          most = Math.max(most, pending);
          setTimeout(() => {
            pending -= 1;
            ok(new File(["x"], name, { type: "image/png" }));
          }, 5);
        },
      };
    };
    const names = Array.from({ length: 50 }, (_, i) => `/big/${i}.png`);
    const found = await walkEntries([dirEntry("/big", [...names].reverse().map(slow))]);
    expect(most).toBe(50);
    expect(found.files.map((f) => `/${f.path}`)).toEqual(names);
  });

  it("walks nested folders depth-first in natural name order", async () => {
    const root = dirEntry("/shots", [
      fileEntry("/shots/img10.png"),
      dirEntry("/shots/night", [fileEntry("/shots/night/b.png"), fileEntry("/shots/night/a.png")]),
      fileEntry("/shots/img2.png"),
    ]);
    const found = await walkEntries([root, fileEntry("/loose.jpg")]);
    expect(found.files.map((f) => f.path)).toEqual([
      "shots/img2.png",
      "shots/img10.png",
      "shots/night/a.png",
      "shots/night/b.png",
      "loose.jpg",
    ]);
    expect(found.files[0]?.file.name).toBe("img2.png");
    expect(found.skipped).toBe(0);
  });

  it("keeps reading a large folder until the reader answers empty", async () => {
    const many = Array.from({ length: 250 }, (_, i) => fileEntry(`/big/f${i}.png`));
    const big = dirEntry("/big", many, 100);
    const found = await walkEntries([big]);
    expect(found.files).toHaveLength(250);
    expect(big.reads).toBe(4); // 100 + 100 + 50 + the empty answer
  });

  it("leaves out hidden files and system folders, and counts them", async () => {
    const root = dirEntry("/set", [
      fileEntry("/set/.DS_Store"),
      fileEntry("/set/._a.png"),
      dirEntry("/set/__MACOSX", [fileEntry("/set/__MACOSX/a.png")]),
      fileEntry("/set/a.png"),
      fileEntry("/set/notes.txt"),
    ]);
    const found = await walkEntries([root]);
    expect(found.files.map((f) => f.path)).toEqual(["set/a.png", "set/notes.txt"]);
    expect(found.skipped).toBe(3);
  });

  it("reports what it cannot read and goes on", async () => {
    const broken: FileEntryLike = { ...fileEntry("/set/locked.png"), file: (_ok, fail) => fail?.(new Error("denied")) };
    const found = await walkEntries([dirEntry("/set", [broken, fileEntry("/set/ok.png")])]);
    expect(found.unreadable).toEqual(["set/locked.png"]);
    expect(found.files.map((f) => f.path)).toEqual(["set/ok.png"]);
  });
});

describe("a drop", () => {
  it("takes entries during the event and falls back to plain files", async () => {
    const plain = new File(["p"], "plain.png");
    const items: ItemLike[] = [
      { kind: "file", getAsFile: () => null, webkitGetAsEntry: () => dirEntry("/dir", [fileEntry("/dir/x.png")]) },
      { kind: "file", getAsFile: () => plain, webkitGetAsEntry: () => null },
      { kind: "string", getAsFile: () => null },
    ];
    const found = await takeDrop(items, null)();
    expect(found.files.map((f) => f.path)).toEqual(["dir/x.png", "plain.png"]);
  });

  it("uses the file list when there are no items", async () => {
    const found = await takeDrop(null, [new File(["a"], "a.png"), new File(["b"], ".hidden")])();
    expect(found.files.map((f) => f.path)).toEqual(["a.png"]);
    expect(found.skipped).toBe(1);
  });
});

describe("a folder picker", () => {
  it("keeps each file's relative path and skips hidden ones", () => {
    const file = (path: string) => {
      const f = new File(["x"], path.split("/").at(-1) ?? path);
      Object.defineProperty(f, "webkitRelativePath", { value: path });
      return f;
    };
    const found = fromInput([file("set/a.png"), file("set/.git/config"), file("set/sub/b.png")]);
    expect(found.files.map((f) => f.path)).toEqual(["set/a.png", "set/sub/b.png"]);
    expect(found.skipped).toBe(1);
  });
});

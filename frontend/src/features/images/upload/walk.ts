// Files out of a drop or a picker, folders included: a dropped folder is walked through
// the File and Directory Entries API (`webkitGetAsEntry`), a picked one arrives as a
// flat list with `webkitRelativePath`.

export interface FoundFile {
  file: File;
  /** Where it was found, e.g. "street/day/0001.jpg" (just the name for loose files). */
  path: string;
}

export interface Found {
  files: FoundFile[];
  /** Hidden files and system folders left out (".DS_Store", "__MACOSX/", "._x.jpg"). */
  skipped: number;
  /** Folders or files the browser could not read. */
  unreadable: string[];
}

/** The parts of FileSystemEntry the walker uses (so tests can pass plain objects). */
export interface EntryLike {
  readonly isFile: boolean;
  readonly isDirectory: boolean;
  readonly name: string;
  readonly fullPath: string;
}
export interface FileEntryLike extends EntryLike {
  file(success: (file: File) => void, failure?: (error: unknown) => void): void;
}
export interface DirectoryEntryLike extends EntryLike {
  createReader(): {
    readEntries(success: (entries: EntryLike[]) => void, failure?: (error: unknown) => void): void;
  };
}

const SYSTEM_DIRS = new Set(["__MACOSX", ".git", ".svn"]);
const SYSTEM_FILES = new Set(["Thumbs.db", "desktop.ini"]);

/** Dot files, AppleDouble and OS litter: never images a person meant to upload. */
export function isJunk(name: string, isDirectory = false): boolean {
  if (name.startsWith(".")) return true;
  return isDirectory ? SYSTEM_DIRS.has(name) : SYSTEM_FILES.has(name);
}

function stripSlash(path: string): string {
  return path.replace(/^\/+/, "");
}

function readFile(entry: FileEntryLike): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

/** Every entry of a directory: readEntries answers in chunks (100 in Chrome) until empty. */
async function readAll(entry: DirectoryEntryLike): Promise<EntryLike[]> {
  const reader = entry.createReader();
  const all: EntryLike[] = [];
  for (;;) {
    const chunk = await new Promise<EntryLike[]>((resolve, reject) =>
      reader.readEntries(resolve, reject),
    );
    if (chunk.length === 0) return all;
    all.push(...chunk);
  }
}

/**
 * Walks entries depth-first, in name order within each folder. The `file()` calls of a
 * folder's entries (one round trip to the browser process each) run at once, not one
 * after another: a dropped folder of thousands of files starts uploading sooner.
 */
export async function walkEntries(entries: readonly EntryLike[]): Promise<Found> {
  const found: Found = { files: [], skipped: 0, unreadable: [] };
  const visit = async (entry: EntryLike): Promise<FoundFile[]> => {
    const path = stripSlash(entry.fullPath || entry.name);
    if (isJunk(entry.name, entry.isDirectory)) {
      found.skipped += 1;
      return [];
    }
    try {
      if (entry.isFile) return [{ file: await readFile(entry as FileEntryLike), path }];
      if (entry.isDirectory) {
        const children = await readAll(entry as DirectoryEntryLike);
        children.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
        return (await Promise.all(children.map(visit))).flat();
      }
    } catch {
      found.unreadable.push(path);
    }
    return [];
  };
  for (const entry of entries) for (const file of await visit(entry)) found.files.push(file);
  return found;
}

/** The parts of DataTransferItem the drop handler uses. */
export interface ItemLike {
  readonly kind: string;
  getAsFile(): File | null;
  webkitGetAsEntry?(): EntryLike | null;
}

/**
 * What a drop carries. Must be called synchronously in the drop handler: the items
 * are only readable during the event; the walk itself runs afterwards.
 */
export function takeDrop(items: ArrayLike<ItemLike> | null, files: ArrayLike<File> | null): () => Promise<Found> {
  const entries: EntryLike[] = [];
  const loose: File[] = [];
  for (const item of Array.from(items ?? [])) {
    if (item.kind !== "file") continue;
    const entry = item.webkitGetAsEntry?.() ?? null;
    if (entry) {
      entries.push(entry);
    } else {
      const file = item.getAsFile();
      if (file) loose.push(file);
    }
  }
  // No items API (or nothing in it): the plain file list.
  if (entries.length === 0 && loose.length === 0) loose.push(...Array.from(files ?? []));
  return async () => {
    const found = await walkEntries(entries);
    for (const file of loose) {
      if (isJunk(file.name)) found.skipped += 1;
      else found.files.push({ file, path: file.name });
    }
    return found;
  };
}

/** Files from an <input type="file"> (with `webkitdirectory` for folders). */
export function fromInput(files: ArrayLike<File> | null): Found {
  const found: Found = { files: [], skipped: 0, unreadable: [] };
  for (const file of Array.from(files ?? [])) {
    const path = file.webkitRelativePath || file.name;
    const parts = path.split("/");
    const junk = parts.some((part, i) => isJunk(part, i < parts.length - 1));
    if (junk) found.skipped += 1;
    else found.files.push({ file, path });
  }
  return found;
}

import { describe, expect, it } from "vitest";
import { batchSizeFor, type SentItem, type Sender, UploadError, UploadQueue } from "./batcher";
import type { FoundFile } from "./walk";

function files(n: number, size = 10, prefix = "img"): FoundFile[] {
  return Array.from({ length: n }, (_, i) => {
    const name = `${prefix}${i}.png`;
    return { file: new File([new Uint8Array(size)], name), path: `set/${name}` };
  });
}

const created = (batch: readonly File[]): SentItem[] =>
  batch.map((f, i) => ({ filename: f.name, status: "created", image_id: i + 1 }));

/** A sender whose requests the test finishes by hand, recording what was in flight. */
function manualSender() {
  const pending: Array<{ files: readonly File[]; resolve: (items: SentItem[]) => void; reject: (e: Error) => void; progress: (l: number, t: number) => void }> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const send: Sender = (batch, onProgress) => {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    return new Promise<SentItem[]>((resolve, reject) => {
      pending.push({
        files: batch,
        progress: onProgress,
        resolve: (items) => {
          inFlight -= 1;
          resolve(items);
        },
        reject: (e) => {
          inFlight -= 1;
          reject(e);
        },
      });
    });
  };
  return { send, pending, max: () => maxInFlight };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("the upload queue", () => {
  it("sizes batches for about four rounds of requests, within 5..100 files", () => {
    expect(batchSizeFor(2000)).toBe(100);
    expect(batchSizeFor(1200)).toBe(100);
    expect(batchSizeFor(600)).toBe(50);
    expect(batchSizeFor(130)).toBe(11);
    expect(batchSizeFor(30)).toBe(5);
    expect(batchSizeFor(1)).toBe(5);
    expect(batchSizeFor(130, 1)).toBe(33);
  });

  it("batches by the size for its files and never sends more than 3 requests at once", async () => {
    const sender = manualSender();
    const queue = new UploadQueue({ send: sender.send });
    queue.add(files(130));
    expect(queue.batches.map((b) => b.files.length)).toEqual([11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 9]);
    expect(sender.pending).toHaveLength(3);
    while (sender.pending.length > 0) {
      const next = sender.pending.shift();
      next?.resolve(created(next.files));
      await tick();
    }
    await queue.whenSettled();
    expect(sender.max()).toBe(3);
    expect(queue.counts()).toMatchObject({ total: 130, created: 130, failed: 0, queued: 0 });
  });

  it("splits a batch the server finds too large for one request until each part fits", async () => {
    // The server takes at most 3 files' worth per request; one file is too large alone.
    const sent: string[][] = [];
    const accepted: string[][] = [];
    const send: Sender = async (batch) => {
      sent.push(batch.map((f) => f.name));
      const bytes = batch.reduce((n, f) => n + f.size, 0);
      if (bytes > 30 && batch.length > 1) throw new UploadError("request body too large", 413);
      accepted.push(batch.map((f) => f.name));
      return batch.map((f) =>
        f.size > 30
          ? { filename: f.name, status: "rejected" as const, reason: "file too large" }
          : { filename: f.name, status: "created" as const, image_id: 1 },
      );
    };
    const queue = new UploadQueue({ send, batchSize: 8, concurrency: 1 });
    queue.add([...files(6, 10, "a"), ...files(1, 40, "big"), ...files(1, 10, "b")]);
    await queue.whenSettled();
    expect(queue.counts()).toMatchObject({ total: 8, created: 7, rejected: 1, failed: 0, queued: 0 });
    expect(queue.files.find((f) => f.path === "set/big0.png")?.reason).toBe("file too large");
    expect(queue.failedBatches).toEqual([]);
    // Every file went through exactly once in a request that fitted.
    expect(accepted.flat().sort()).toEqual(queue.files.map((f) => f.file.name).sort());
    expect(sent[0]).toHaveLength(8);
  });

  it("fails a single file whose request alone is too large, with the server's words", async () => {
    const send: Sender = async () => {
      throw new UploadError("request body too large (limit 10 bytes)", 413);
    };
    const queue = new UploadQueue({ send, batchSize: 4, concurrency: 2 });
    queue.add(files(3));
    await queue.whenSettled();
    expect(queue.counts()).toMatchObject({ total: 3, failed: 3 });
    expect(queue.failedBatches.map((b) => b.files.length)).toEqual([1, 1, 1]);
    expect(queue.files[0]?.reason).toBe("request body too large (limit 10 bytes)");
  });

  it("records the server's answer per file: created, duplicate, rejected with its reason", async () => {
    const send: Sender = async (batch) =>
      batch.map((f): SentItem => {
        if (f.name.endsWith(".txt")) return { filename: f.name, status: "rejected", reason: "not an allowed image format" };
        if (f.name.startsWith("again")) return { filename: f.name, status: "duplicate", image_id: 7 };
        return { filename: f.name, status: "created", image_id: 42 };
      });
    const queue = new UploadQueue({ send });
    queue.add([...files(1), ...files(1, 10, "again"), { file: new File(["hi"], "notes.txt"), path: "notes.txt" }]);
    await queue.whenSettled();
    expect(queue.files.map((f) => [f.path, f.status, f.imageId, f.reason])).toEqual([
      ["set/img0.png", "created", 42, null],
      ["set/again0.png", "duplicate", 7, null],
      ["notes.txt", "rejected", null, "not an allowed image format"],
    ]);
    expect(queue.counts()).toMatchObject({ created: 1, duplicate: 1, rejected: 1 });
  });

  it("lists a failed batch, carries on with the rest and retries only the failed one", async () => {
    let calls = 0;
    const sent: string[][] = [];
    const send: Sender = async (batch) => {
      calls += 1;
      sent.push(batch.map((f) => f.name));
      if (calls === 2) throw new UploadError("Cannot reach the server; check the connection.");
      return created(batch);
    };
    const queue = new UploadQueue({ send, batchSize: 2, concurrency: 1 });
    queue.add(files(6));
    await queue.whenSettled();
    expect(queue.failedBatches.map((b) => b.id)).toEqual([1]);
    expect(queue.failedBatches[0]?.error).toMatch(/Cannot reach the server/);
    expect(queue.files.filter((f) => f.status === "failed").map((f) => f.path)).toEqual(["set/img2.png", "set/img3.png"]);
    expect(queue.counts()).toMatchObject({ created: 4, failed: 2 });

    queue.retryFailed();
    await queue.whenSettled();
    expect(sent.at(-1)).toEqual(["img2.png", "img3.png"]);
    expect(calls).toBe(4);
    expect(queue.failedBatches).toEqual([]);
    expect(queue.counts()).toMatchObject({ created: 6, failed: 0 });
    expect(queue.batches[1]?.attempts).toBe(2);
  });

  it("tells its listener when it has settled, also after a retry", async () => {
    let fail = true;
    const seen: boolean[] = [];
    const send: Sender = async (batch) => {
      if (fail) throw new UploadError("Cannot reach the server; check the connection.");
      return created(batch);
    };
    const queue: UploadQueue = new UploadQueue({ send, onChange: () => seen.push(queue.settled) });
    queue.add(files(2));
    await queue.whenSettled();
    expect(seen.at(-1)).toBe(true);
    fail = false;
    seen.length = 0;
    queue.retryFailed();
    expect(seen[0]).toBe(false);
    await queue.whenSettled();
    expect(seen.at(-1)).toBe(true);
    expect(queue.counts().created).toBe(2);
  });

  it("stops sending when the server says every next batch would fail too", async () => {
    let calls = 0;
    const send: Sender = async () => {
      calls += 1;
      throw new UploadError("this needs the owner role in the project", 403, true);
    };
    const queue = new UploadQueue({ send, batchSize: 1, concurrency: 1 });
    queue.add(files(5));
    await queue.whenSettled();
    expect(calls).toBe(1);
    expect(queue.counts()).toMatchObject({ failed: 5 });
    expect(queue.files[4]?.reason).toBe("this needs the owner role in the project");
  });

  it("spreads a batch's upload progress over its files in order", async () => {
    const sender = manualSender();
    const queue = new UploadQueue({ send: sender.send });
    queue.add(files(4, 100));
    const request = sender.pending[0];
    request?.progress(150, 400); // each file an equal share of the body
    expect(queue.files.map((f) => f.progress)).toEqual([1, 0.5, 0, 0]);
    expect(queue.files.every((f) => f.status === "uploading")).toBe(true);
    request?.progress(400, 400);
    expect(queue.files.every((f) => f.status === "processing")).toBe(true);
    request?.resolve(created(request.files));
    await queue.whenSettled();
    expect(queue.counts().sent).toBe(4);
  });

  it("marks files the server did not answer for as failed", async () => {
    const send: Sender = async (batch) => created(batch).slice(0, 1);
    const queue = new UploadQueue({ send });
    queue.add(files(2));
    await queue.whenSettled();
    expect(queue.files.map((f) => f.status)).toEqual(["created", "failed"]);
    expect(queue.failedBatches).toHaveLength(1);
  });

  it("cancels: nothing more is sent and what waited is listed as failed", async () => {
    const sender = manualSender();
    const queue = new UploadQueue({ send: sender.send, batchSize: 1, concurrency: 1 });
    queue.add(files(3));
    queue.cancel();
    sender.pending[0]?.reject(new UploadError("aborted"));
    await queue.whenSettled();
    expect(sender.pending).toHaveLength(1);
    expect(queue.counts()).toMatchObject({ failed: 3 });
    expect(queue.files.map((f) => f.reason)).toEqual(["Canceled.", "Canceled.", "Canceled."]);
  });
});

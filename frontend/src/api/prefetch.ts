// What a page will need, started before its code has loaded: the router starts the
// editor's thumbnail and its data while the editor's chunk downloads, and the editor
// starts the next image's file while the user works, so that opening an image waits
// for as little as possible. Only the API's own endpoints are fetched.
const KEEP = 6;

export const imageFileUrl = (imageId: number) => `/api/images/${imageId}/file`;
export const thumbnailUrl = (imageId: number) => `/api/images/${imageId}/thumbnail`;

function cached(cache: Map<number, HTMLImageElement>, imageId: number, url: string): HTMLImageElement {
  let img = cache.get(imageId);
  if (img) {
    cache.delete(imageId); // most recent last
  } else {
    img = new window.Image();
    img.decoding = "async";
    img.src = url;
  }
  cache.set(imageId, img);
  while (cache.size > KEEP) cache.delete(cache.keys().next().value as number);
  return img;
}

// The full-resolution files, as their compressed bytes (a 12-megapixel JPEG is ~1.5 MB
// here, ~48 MB decoded: only the image on screen is ever decoded).
const files = new Map<number, Promise<Blob>>();

/** Starts downloading the image's file (once; kept for the next few images). */
export function prefetchFile(imageId: number): Promise<Blob> {
  let file = files.get(imageId);
  if (file) files.delete(imageId);
  else {
    file = fetch(imageFileUrl(imageId), { credentials: "same-origin" }).then((response) => {
      if (!response.ok) throw new Error(`The image file could not be loaded (${response.status}).`);
      return response.blob();
    });
    file.catch(() => files.delete(imageId)); // a failed download may be tried again
  }
  files.set(imageId, file);
  while (files.size > KEEP) files.delete(files.keys().next().value as number);
  return file;
}

/** A full-resolution image ready to draw: an ImageBitmap, or an <img> where the browser
 * has no createImageBitmap. */
export type FullImage = ImageBitmap | HTMLImageElement;

/**
 * The image's file decoded off the main thread into a bitmap. (An <img> decoded with
 * `decode()` is decoded again, on the main thread, the first time a canvas draws it:
 * ~130 ms for 12 megapixels in software; a bitmap is drawn as it is.) EXIF orientation
 * is applied, as an <img> would.
 */
export async function fullImage(imageId: number): Promise<FullImage> {
  if (typeof window.createImageBitmap !== "function") {
    const img = new window.Image();
    img.decoding = "async";
    img.src = imageFileUrl(imageId);
    await img.decode();
    return img;
  }
  const blob = await prefetchFile(imageId);
  return window.createImageBitmap(blob, { imageOrientation: "from-image" });
}

/** The drawn size of an image: after EXIF orientation, in its own pixels. */
export function sizeOf(image: FullImage): { width: number; height: number } {
  return image instanceof HTMLImageElement
    ? { width: image.naturalWidth, height: image.naturalHeight }
    : { width: image.width, height: image.height };
}

const thumbnails = new Map<number, HTMLImageElement>();
/** The image's thumbnail, a preview to draw while the full file decodes. */
export function thumbnailFile(imageId: number): HTMLImageElement {
  return cached(thumbnails, imageId, thumbnailUrl(imageId));
}

/** The image's thumbnail if it is here already, downloaded (not necessarily decoded). */
export function thumbnailIfLoaded(imageId: number): HTMLImageElement | null {
  const img = thumbnails.get(imageId);
  return img?.complete && img.naturalWidth > 0 ? img : null;
}

/**
 * The thumbnail once its bytes are in, or it failed (never rejects; a failed one has
 * no `naturalWidth`). Not its
 * `decode()`: that promise is settled with a rendering frame, which a busy main thread
 * delays by a hundred milliseconds, while drawing a 256-pixel JPEG that is not decoded
 * yet costs well under a millisecond.
 */
export function thumbnailLoaded(imageId: number): Promise<HTMLImageElement> {
  const img = thumbnailFile(imageId);
  if (img.complete) return Promise.resolve(img);
  return new Promise((resolve) => {
    img.addEventListener("load", () => resolve(img), { once: true });
    img.addEventListener("error", () => resolve(img), { once: true });
  });
}

const decodes = new WeakMap<HTMLImageElement, Promise<void>>();
/**
 * The image decoded (one decode per element, shared): a second `decode()` of the same
 * element would queue behind every decode asked for meanwhile (such as a 12-megapixel
 * file's), so the preview decoded early by the router is reused, not asked for again.
 */
export function decoded(img: HTMLImageElement): Promise<void> {
  let done = decodes.get(img);
  if (!done) {
    done = img.decode();
    done.catch(() => decodes.delete(img)); // a failed decode may be retried
    decodes.set(img, done);
  }
  return done;
}

interface Early {
  at: number;
  response: Promise<Response>;
  // Set by `settleEarly`: the body read, and once it is, its JSON (undefined: failed).
  read?: Promise<void>;
  done?: boolean;
  value?: unknown;
}
const early = new Map<string, Early>();
// An early answer nobody took soon is stale: the page asks again instead.
const EARLY_TTL_MS = 10_000;

/** Starts a GET of an API path now; the page that needs it takes it with `takeEarly`. */
export function fetchEarly(path: string): void {
  const kept = early.get(path);
  if (kept && performance.now() - kept.at < EARLY_TTL_MS) return;
  early.delete(path);
  const started = fetch(path, { credentials: "same-origin" });
  started.catch(() => undefined); // a failure is the taker's to handle
  early.set(path, { at: performance.now(), response: started });
  while (early.size > KEEP) early.delete(early.keys().next().value as string);
}

function readBody(kept: Early): Promise<void> {
  kept.read ??= kept.response
    .then((response) => (response.ok ? response.json() : undefined))
    .then(
      (value: unknown) => {
        kept.value = value;
        kept.done = true;
      },
      () => {
        kept.done = true;
      },
    );
  return kept.read;
}

/**
 * Waits until the early GET of `path` (if one was started) is in and parsed, so that
 * the page's first render can take it with `takeEarlyNow` instead of rendering
 * "Loading…" first. Never rejects.
 */
export function settleEarly(path: string): Promise<void> {
  const kept = early.get(path);
  return kept ? readBody(kept) : Promise.resolve();
}

function fresh(path: string): Early | undefined {
  const kept = early.get(path);
  if (!kept) return undefined;
  if (performance.now() - kept.at < EARLY_TTL_MS) return kept;
  early.delete(path);
  return undefined;
}

/** The JSON of an early GET of `path` if it is already in and succeeded, left for the
 * page to take. */
export function peekEarly<T>(path: string): T | undefined {
  const kept = fresh(path);
  return kept?.done ? (kept.value as T | undefined) : undefined;
}

/** The JSON of an early GET of `path` if it is already in (see `settleEarly`) and
 * succeeded (used once). */
export function takeEarlyNow<T>(path: string): T | undefined {
  const kept = fresh(path);
  if (!kept?.done) return undefined;
  early.delete(path);
  return kept.value as T | undefined;
}

/** The JSON of an early GET of `path` if one was started lately and succeeded (used once). */
export async function takeEarly<T>(path: string): Promise<T | undefined> {
  const kept = fresh(path);
  if (!kept) return undefined;
  early.delete(path);
  await readBody(kept);
  return kept.value as T | undefined;
}

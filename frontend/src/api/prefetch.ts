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

const early = new Map<string, { at: number; response: Promise<Response> }>();
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

/** The JSON of an early GET of `path` if one was started lately and succeeded (used once). */
export async function takeEarly<T>(path: string): Promise<T | undefined> {
  const kept = early.get(path);
  if (!kept) return undefined;
  early.delete(path);
  if (performance.now() - kept.at >= EARLY_TTL_MS) return undefined;
  try {
    const response = await kept.response;
    return response.ok ? ((await response.json()) as T) : undefined;
  } catch {
    return undefined;
  }
}

// What a page will need, started before its code has loaded: the router starts the
// editor's image file, thumbnail and boxes while the editor's chunk downloads, and the
// editor starts the next image's file while the user works, so that opening an image
// waits for as little as possible. Only the API's own endpoints are fetched.
const kept = new Map<number, HTMLImageElement>();
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

/** The image element for `imageId`, its download under way (the same element each time). */
export function imageFile(imageId: number): HTMLImageElement {
  return cached(kept, imageId, imageFileUrl(imageId));
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

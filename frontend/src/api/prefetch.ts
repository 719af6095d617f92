// What a page will need, started before its code has loaded: the router starts the
// editor's image file, thumbnail and boxes while the editor's chunk downloads, and the
// editor starts the next image's file while the user works, so that opening an image
// waits for as little as possible. Only the API's own endpoints are fetched.
const kept = new Map<number, HTMLImageElement>();
const KEEP = 4;

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

const early = new Map<string, Promise<Response>>();

/** Starts a GET of an API path now; the page that needs it takes it with `takeEarly`. */
export function fetchEarly(path: string): void {
  if (early.has(path)) return;
  const started = fetch(path, { credentials: "same-origin" });
  started.catch(() => undefined); // a failure is the taker's to handle
  early.set(path, started);
  while (early.size > KEEP) early.delete(early.keys().next().value as string);
}

/** The JSON of an early GET of `path` if one was started and succeeded (used once). */
export async function takeEarly<T>(path: string): Promise<T | undefined> {
  const started = early.get(path);
  if (!started) return undefined;
  early.delete(path);
  try {
    const response = await started;
    return response.ok ? ((await response.json()) as T) : undefined;
  } catch {
    return undefined;
  }
}

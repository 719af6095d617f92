// The editor's route: /projects/:projectId/images/:imageId. Loads the editor's start
// (the image, its project, its boxes and neighbours: one request), any edit this
// browser kept for it and the thumbnail, in parallel; hands them to the editor, which
// draws the thumbnail at once. The full-resolution file comes once that first frame is
// on screen, and then replaces the thumbnail.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useRef, useState } from "react";
import { useParams } from "react-router";
import { ApiError } from "../../api/errors";
import { keys } from "../../api/keys";
import { type FullImage, fullImage, takeEarlyNow, thumbnailIfLoaded, thumbnailLoaded } from "../../api/prefetch";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { type EditorStart, editorStartPath, editorStartQuery, neighborsQuery } from "./api";
import { Editor } from "./Editor";
import { type KeptRead, takeKeptEdit } from "./keptEdit";
import type { PendingEdit } from "./offline";

// The editor's code has arrived (the bench's breakdown of an opening).
performance.mark("oculab:editor-code");

const notFound = () => new ApiError(404, "There is no image at this address.");

type Loaded<T> = { image: T | null; error: Error | null };
const FILE_ERROR = "The image file could not be loaded.";

/**
 * The thumbnail once its bytes are in (the router asked for it already; when they are
 * in before the first render, that render has it). Not awaiting its `decode()`: that
 * promise is settled with a rendering frame, which a busy main thread delays by a
 * hundred milliseconds, while drawing a 256-pixel JPEG that is not decoded yet costs
 * well under a millisecond.
 */
function usePreview(imageId: number): Loaded<HTMLImageElement> {
  const [state, setState] = useState<Loaded<HTMLImageElement> & { id: number }>({ id: imageId, image: null, error: null });
  useEffect(() => {
    if (thumbnailIfLoaded(imageId)) {
      // Rendered with it already: no second render for the same image.
      performance.mark("oculab:preview-loaded");
      return;
    }
    let live = true;
    void thumbnailLoaded(imageId).then((img) => {
      const usable = img.naturalWidth > 0;
      if (usable) performance.mark("oculab:preview-loaded");
      if (live) setState({ id: imageId, image: usable ? img : null, error: usable ? null : new Error(FILE_ERROR) });
    });
    return () => {
      live = false;
    };
  }, [imageId]);
  if (state.id === imageId && (state.image || state.error)) return state;
  return { image: thumbnailIfLoaded(imageId), error: null };
}

/**
 * The editor's start as the route left it (its early GET, in and parsed before the first
 * render), taken once per image shown; undefined when it was not in time.
 */
function useEarlyStart(imageId: number): EditorStart | undefined {
  const taken = useRef<{ id: number; data: EditorStart | undefined } | null>(null);
  if (taken.current?.id !== imageId) {
    taken.current = { id: imageId, data: takeEarlyNow<EditorStart>(editorStartPath(imageId)) };
  }
  return taken.current.data;
}

/**
 * The full-resolution image, downloaded (unless the previous image's editor did) and
 * decoded only once `painted`: a 12-megapixel file takes longer to serve and decode
 * than everything else the opening needs, and on a small machine it would take the
 * server's and the page's CPU from it. Its bitmap is released when the editor moves on.
 */
function useFullImage(imageId: number, painted: boolean): Loaded<FullImage> {
  const [state, setState] = useState<Loaded<FullImage> & { id: number }>({ id: imageId, image: null, error: null });
  useEffect(() => {
    if (!painted) return;
    let live = true;
    let made: FullImage | null = null;
    fullImage(imageId)
      .then((image) => {
        made = image;
        performance.mark("oculab:image-decoded");
        if (live) setState({ id: imageId, image, error: null });
        else if (image instanceof ImageBitmap) image.close();
      })
      .catch(() => live && setState({ id: imageId, image: null, error: new Error(FILE_ERROR) }));
    return () => {
      live = false;
      if (made instanceof ImageBitmap) made.close();
    };
  }, [imageId, painted]);
  return state.id === imageId ? state : { image: null, error: null };
}

/**
 * The kept edit, read once per image shown: the read the route started (see
 * keptEdit.ts), taken as it is, so that when it is already in the first render has it.
 */
function usePending(imageId: number) {
  const [pending, setPending] = useState<{ id: number; edit: PendingEdit | null } | null>(null);
  const read = useRef<{ id: number; read: KeptRead } | null>(null);
  if (read.current?.id !== imageId) read.current = { id: imageId, read: takeKeptEdit(imageId) };
  const current = read.current.read;
  useEffect(() => {
    if (current.settled) return;
    let live = true;
    void current.edit.then((kept) => live && setPending({ id: imageId, edit: kept }));
    return () => {
      live = false;
    };
  }, [imageId, current]);
  if (current.settled) return { id: imageId, edit: current.settled.edit };
  return pending?.id === imageId ? pending : null;
}

export function EditorPage() {
  const params = useParams();
  const projectId = Number(params.projectId);
  const imageId = Number(params.imageId);
  const valid = [projectId, imageId].every((n) => Number.isSafeInteger(n) && n > 0);
  const queryClient = useQueryClient();
  const early = useEarlyStart(imageId);
  const start = useQuery({ ...editorStartQuery(imageId), enabled: valid && early === undefined });
  const pending = usePending(valid ? imageId : 0);
  const preview = usePreview(imageId);
  const [painted, setPainted] = useState<number | null>(null);
  // Without a preview (its thumbnail failed) nothing waits for a first frame.
  const file = useFullImage(imageId, painted === imageId || preview.error !== null);
  const data = early ?? start.data;
  const belongs = data !== undefined && data.image.project_id === projectId;
  useTitle(data ? data.image.filename : "Editor");

  // The start's project and neighbours go to the cache as this opening saw them (the
  // gallery finds the project there; the editor's neighbours need no second request),
  // before the editor that reads them mounts. Once per answer.
  const seeded = useRef<unknown>(null);
  if (data && belongs && seeded.current !== data) {
    seeded.current = data;
    queryClient.setQueryData(keys.project(data.project.id), data.project);
    queryClient.setQueryData(neighborsQuery(data.image.id).queryKey, data.neighbors);
  }

  const onPainted = useCallback(() => setPainted(imageId), [imageId]);

  if (!valid) return <ErrorMessage error={notFound()} title="Not found" />;
  if (start.isError) return <ErrorMessage error={start.error} />;
  if (data && !belongs) return <ErrorMessage error={notFound()} title="Not found" />;
  // A file that fails after the preview is drawn leaves the editor on the preview (the
  // work on screen stays); with neither, there is nothing to edit on.
  if (file.error && !preview.image) return <ErrorMessage error={file.error} />;
  const shown = file.image ?? preview.image;
  if (!data || !pending || !shown) {
    return <p className="page-status">Loading image…</p>;
  }
  return (
    <Editor
      key={imageId}
      project={data.project}
      image={data.image}
      file={file.image}
      preview={preview.image}
      annotations={data.annotations}
      pending={pending.edit}
      onPainted={onPainted}
    />
  );
}

// The editor's route: /projects/:projectId/images/:imageId. Loads the project (classes,
// colours, role), the image, its boxes, any edit this browser kept for it and the
// full-resolution file, in parallel; then hands them to the editor.
import { useQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { useParams } from "react-router";
import { ApiError } from "../../api/errors";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { decoded, imageFile, thumbnailFile } from "../../api/prefetch";
import { type Annotations, imageQuery, loadAnnotations, projectQuery } from "./api";
import { Editor } from "./Editor";
import { offlineStore } from "./localStore";
import type { PendingEdit } from "./offline";

const notFound = () => new ApiError(404, "There is no image at this address.");

type Decoded = { image: HTMLImageElement | null; error: Error | null };

/** An image decoded off the main thread before it is drawn. */
function useDecoded(imageId: number, load: (id: number) => HTMLImageElement, mark: string): Decoded {
  const [state, setState] = useState<Decoded & { id: number }>({ id: imageId, image: null, error: null });
  useEffect(() => {
    let live = true;
    const img = load(imageId);
    decoded(img)
      .then(() => {
        performance.mark(mark);
        if (live) setState({ id: imageId, image: img, error: null });
      })
      .catch(() => live && setState({ id: imageId, image: null, error: new Error("The image file could not be loaded.") }));
    return () => {
      live = false;
    };
  }, [imageId, load, mark]);
  return state.id === imageId ? state : { image: null, error: null };
}

function useStart(imageId: number) {
  // Boxes are read once per opening: from then on the editor's copy is the truth.
  const annotations = useQuery({
    queryKey: ["images", imageId, "annotations"],
    queryFn: () => loadAnnotations(imageId, true),
    enabled: imageId > 0,
    staleTime: 0,
    gcTime: 0,
    refetchOnWindowFocus: false,
    refetchOnReconnect: false,
  });
  const [pending, setPending] = useState<{ id: number; edit: PendingEdit | null } | null>(null);
  useEffect(() => {
    let live = true;
    const store = offlineStore();
    if (!store) setPending({ id: imageId, edit: null });
    else
      store
        .get(imageId)
        .then((edit) => live && setPending({ id: imageId, edit: edit ?? null }))
        .catch(() => live && setPending({ id: imageId, edit: null }));
    return () => {
      live = false;
    };
  }, [imageId]);
  return {
    annotations,
    pending: pending?.id === imageId ? pending : null,
  };
}

export function EditorPage() {
  const params = useParams();
  const projectId = Number(params.projectId);
  const imageId = Number(params.imageId);
  const valid = [projectId, imageId].every((n) => Number.isSafeInteger(n) && n > 0);
  // Everything starts at once: the project, the image's record, its boxes, the kept
  // edit and the file (already downloading since the route began).
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const image = useQuery({ ...imageQuery(imageId), enabled: valid });
  const { annotations, pending } = useStart(valid ? imageId : 0);
  // The thumbnail is a preview drawn at once; the full file replaces it once decoded
  // (a 12-megapixel JPEG takes longer to decode than everything else the editor needs).
  // The preview's decode is asked for first: decodes are served in order.
  const preview = useDecoded(imageId, thumbnailFile, "oculab:preview-decoded");
  const file = useDecoded(imageId, imageFile, "oculab:image-decoded");
  useTitle(image.data ? `${image.data.filename}` : "Editor");

  if (!valid) return <ErrorMessage error={notFound()} title="Not found" />;
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (image.isError) return <ErrorMessage error={image.error} />;
  if (image.data && image.data.project_id !== projectId) {
    return <ErrorMessage error={notFound()} title="Not found" />;
  }
  if (annotations.isError) return <ErrorMessage error={annotations.error} />;
  if (file.error) return <ErrorMessage error={file.error} />;
  const shown = file.image ?? preview.image;
  if (!project.data || !image.data || !annotations.data || !pending || !shown) {
    return <p className="page-status">Loading image…</p>;
  }
  return (
    <Editor
      key={imageId}
      project={project.data}
      image={image.data}
      file={file.image}
      preview={preview.image}
      annotations={annotations.data as Annotations}
      pending={pending.edit}
    />
  );
}

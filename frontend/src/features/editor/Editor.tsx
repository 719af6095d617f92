// One image open in the editor: the canvas, the side panel, the save state, the keys,
// the help overlay and the conflict dialog. Owns the image's store (what the user is
// doing) and its ImageSync (getting it to the server).
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import { Link, useNavigate } from "react-router";
import { type FullImage, prefetchFile } from "../../api/prefetch";
import { keys } from "../../api/keys";
import {
  type Annotations,
  type ImageInfo,
  loadAnnotations,
  neighborsQuery,
  type Project,
  saveAnnotations,
} from "./api";
import { type EditorBox, withIds } from "./boxes";
import { ConflictDialog } from "./ConflictDialog";
import { drawnSize } from "./earlyFrame";
import { EditorCanvas } from "./EditorCanvas";
import { EditorPanel } from "./EditorPanel";
import { HelpDialog } from "./HelpDialog";
import { offlineStore, openImages } from "./localStore";
import { backgroundSaver } from "./background";
import type { PendingEdit } from "./offline";
import { createEditorStore } from "./store";
import { ImageSync, type SyncState } from "./sync";
import { useEditorKeys } from "./useEditorKeys";
import "./editor.css";
import { useStore } from "zustand";

interface Props {
  project: Project;
  image: ImageInfo;
  /** the full-resolution file, once decoded */
  file: FullImage | null;
  /** the thumbnail, drawn until the file is decoded */
  preview: HTMLImageElement | null;
  annotations: Annotations;
  pending: PendingEdit | null;
  /** the first frame with the image and every box is on screen */
  onPainted?: () => void;
}

const SAVE_TEXT: Record<SyncState["status"], string> = {
  saved: "All changes saved",
  pending: "Unsaved changes",
  saving: "Saving…",
  offline: "Offline: changes kept in this browser, retrying",
  conflict: "Someone else saved this image",
  refused: "Not saved",
};

export function Editor({ project, image, file, preview, annotations, pending, onPainted }: Props) {
  const readOnly = project.role === "viewer";
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [{ store, sync }] = useState(() => {
    // Everything the opening waited for has arrived (the bench's breakdown).
    performance.mark("oculab:editor-data");
    const kept = readOnly ? null : pending;
    const fromServer = withIds(annotations.boxes);
    const boxes = kept ? kept.boxes : fromServer;
    const created = createEditorStore(boxes);
    const imageSync = new ImageSync(
      {
        imageId: image.id,
        projectId: project.id,
        store: readOnly ? null : offlineStore(),
        save: (revision, data) => saveAnnotations(image.id, revision, data),
        load: async () => {
          const now = await loadAnnotations(image.id);
          return { revision: now.revision, boxes: now.boxes };
        },
        onReplace: (next: EditorBox[]) => created.getState().commit(next),
      },
      kept
        ? { revision: kept.baseRevision, baseBoxes: kept.baseBoxes, boxes: kept.boxes, editedAt: kept.updatedAt }
        : { revision: annotations.revision, baseBoxes: fromServer, boxes: fromServer },
    );
    return { store: created, sync: imageSync };
  });
  const save = useSyncExternalStore(sync.subscribe, sync.getState);
  const help = useStore(store, (s) => s.help);
  const [imageSize] = useState(() => drawnSize(image, file, preview));
  // The editor's start put them in the cache: fresh for a while, and refetched when a
  // save changes them.
  const neighbors = useQuery({ ...neighborsQuery(image.id), staleTime: 30_000 });
  const [notice, setNotice] = useState<string | null>(null);

  // Every change of the boxes goes to the sync (kept in this browser, saved debounced).
  useEffect(() => {
    sync.start();
    const stop = store.subscribe((state, previous) => {
      if (state.history.present !== previous.history.present) sync.edit(state.history.present);
    });
    const online = () => sync.online();
    window.addEventListener("online", online);
    return () => {
      stop();
      window.removeEventListener("online", online);
      sync.dispose();
    };
  }, [store, sync]);

  // Edits of other images that this browser still keeps (an earlier outage) go now,
  // through the app's background saver (which leaves this image to its editor).
  useEffect(() => {
    if (readOnly) return;
    // The image stays this editor's until its last save has its answer: a save of
    // the same edit from the background saver would race it into a 409.
    openImages.add(image.id);
    void backgroundSaver()?.flush();
    return () => {
      void sync.whenClosed().then(() => openImages.delete(image.id));
    };
  }, [image.id, readOnly, sync]);

  // Saved: the gallery's counts and the neighbours' statuses changed.
  useEffect(() => {
    if (save.status !== "saved" || save.revision === annotations.revision) return;
    void queryClient.invalidateQueries({ queryKey: keys.project(project.id) });
    void queryClient.invalidateQueries({ queryKey: neighborsQuery(image.id).queryKey });
  }, [save.status, save.revision, annotations.revision, queryClient, project.id, image.id]);

  // Closing the tab with unsaved work asks first.
  useEffect(() => {
    const warn = (event: BeforeUnloadEvent) => {
      if (!sync.dirty && sync.getState().status === "saved") return;
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [sync]);

  const go = useCallback(
    (which: "previous" | "next" | "next_unreviewed") => {
      const target = neighbors.data?.[which];
      if (target) {
        setNotice(null);
        void navigate(`/projects/${project.id}/images/${target}`);
      } else {
        setNotice(
          which === "next_unreviewed"
            ? "Every other image of this project is reviewed."
            : which === "next"
              ? "This is the project's last image."
              : "This is the project's first image.",
        );
      }
    },
    [navigate, neighbors.data, project.id],
  );

  useEditorKeys({
    store,
    image: imageSize,
    imageId: image.id,
    classCount: project.classes.length,
    readOnly,
    onNavigate: go,
    onSaveNow: () => void sync.flush(),
  });

  const onReady = useCallback(() => {
    performance.mark("oculab:editor-ready");
    onPainted?.();
  }, [onPainted]);

  // The next image downloads while this one is worked on (once this one's file is in:
  // not while the opening still needs the server).
  const following = neighbors.data?.next;
  const shown = file !== null;
  useEffect(() => {
    if (following && shown) prefetchFile(following).catch(() => undefined);
  }, [following, shown]);

  return (
    <section className="editor" aria-label="Editor">
      <header className="editor-bar">
        <nav aria-label="Breadcrumb" className="crumbs">
          <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
          <Link to={`/projects/${project.id}`}>{project.name}</Link> <span aria-hidden="true">/</span>{" "}
          <span aria-current="page">{image.filename}</span>
        </nav>
        <span className={`status status-${image.status}`}>{readOnly ? "read-only" : null}</span>
        {!readOnly && (
          <p role="status" className={`save-state save-${save.status}`}>
            {SAVE_TEXT[save.status]}
            {save.status === "refused" && save.message ? `: ${save.message}` : ""}
            {!save.keptLocally && save.status !== "saved" ? " (this browser cannot keep a copy)" : ""}
          </p>
        )}
        {save.status === "refused" && (
          <>
            <button type="button" onClick={() => void sync.flush()}>
              Retry save
            </button>
            <button type="button" onClick={() => void sync.discard()}>
              Discard my changes
            </button>
          </>
        )}
        <div className="editor-nav" role="group" aria-label="Images">
          <button type="button" aria-label="Previous image" title="Previous image (D)" onClick={() => go("previous")} disabled={!neighbors.data?.previous}>
            ← Prev
          </button>
          <button type="button" aria-label="Next image" title="Next image (F)" onClick={() => go("next")} disabled={!neighbors.data?.next}>
            Next →
          </button>
          <button type="button" title="Next image not reviewed (N)" onClick={() => go("next_unreviewed")}>
            Next unreviewed
          </button>
          <Link className="button" to={`/projects/${project.id}/review`}>
            Review queue
          </Link>
          <button type="button" aria-label="Keyboard shortcuts" title="Keyboard shortcuts (?)" onClick={() => store.getState().setHelp(true)}>
            ?
          </button>
        </div>
      </header>
      {notice && (
        <p className="notice" role="alert">
          {notice}
        </p>
      )}
      <div className="editor-body">
        <EditorCanvas
          store={store}
          image={(file ?? preview) as FullImage}
          full={file !== null}
          size={imageSize}
          colors={project.class_colors}
          classNames={project.classes}
          readOnly={readOnly}
          onReady={onReady}
        />
        <EditorPanel
          store={store}
          image={imageSize}
          imageId={image.id}
          classNames={project.classes}
          colors={project.class_colors}
          readOnly={readOnly}
        />
      </div>
      {help && <HelpDialog readOnly={readOnly} onClose={() => store.getState().setHelp(false)} />}
      {save.status === "conflict" && save.conflict && (
        <ConflictDialog
          merge={save.conflict.merge}
          revision={save.conflict.revision}
          classNames={project.classes}
          onChoose={(choice) => sync.resolve(choice)}
        />
      )}
    </section>
  );
}

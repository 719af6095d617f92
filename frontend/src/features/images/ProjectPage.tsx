import { useQuery } from "@tanstack/react-query";
import { type DragEvent, useEffect, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canAddImages, canEditProject, canExport } from "../../lib/permissions";
import { ExportDialog } from "./ExportDialog";
import { ImageGrid } from "./ImageGrid";
import { ImportDialog } from "./ImportDialog";
import {
  type ImageStatus,
  isImageStatus,
  isSplit,
  projectQuery,
  type Split,
  SPLITS,
  STATUSES,
} from "./queries";
import { UploadPanel } from "./upload/UploadPanel";
import { useUploadSession } from "./upload/useUploads";
import { fromInput, takeDrop } from "./upload/walk";

const LABELS: Record<ImageStatus, string> = {
  unlabeled: "Unlabeled",
  predicted: "Predicted",
  reviewed: "Reviewed",
};
const SPLIT_LABELS: Record<Split, string> = { train: "Train", val: "Val", test: "Test" };

type Counts = { total: number } & Record<ImageStatus, number>;

function hasFiles(event: DragEvent): boolean {
  return Array.from(event.dataTransfer?.types ?? []).includes("Files");
}

export function ProjectPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const [params, setParams] = useSearchParams();
  const rawStatus = params.get("status");
  const rawSplit = params.get("split");
  const statusFromUrl = isImageStatus(rawStatus) ? rawStatus : null;
  const splitFromUrl = isSplit(rawSplit) ? rawSplit : null;
  // The filters follow the URL (reload, back) but switch at once on a click: the
  // router updates the URL a tick later.
  const [status, setStatus] = useState<ImageStatus | null>(statusFromUrl);
  const [split, setSplit] = useState<Split | null>(splitFromUrl);
  useEffect(() => setStatus(statusFromUrl), [statusFromUrl]);
  useEffect(() => setSplit(splitFromUrl), [splitFromUrl]);
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  useTitle(project.data?.name ?? "Project");
  const uploads = useUploadSession(projectId);
  const [uploadSplit, setUploadSplit] = useState<Split | "">("");
  const [dialog, setDialog] = useState<"import" | "export" | null>(null);
  const [dragging, setDragging] = useState(false);
  const dragDepth = useRef(0);

  // A file dropped anywhere else (or by someone who may not upload) must not make the
  // browser open it in place of the app, ending any upload in progress.
  useEffect(() => {
    const guard = (event: globalThis.DragEvent) => {
      if (!Array.from(event.dataTransfer?.types ?? []).includes("Files") || event.defaultPrevented) return;
      event.preventDefault();
      if (event.type === "dragover" && event.dataTransfer) event.dataTransfer.dropEffect = "none";
    };
    window.addEventListener("dragover", guard);
    window.addEventListener("drop", guard);
    return () => {
      window.removeEventListener("dragover", guard);
      window.removeEventListener("drop", guard);
    };
  }, []);

  if (!valid) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  if (project.isPending) return <p className="page-status">Loading project…</p>;
  if (project.isError) return <ErrorMessage error={project.error} />;

  const { role } = project.data;
  const mayUpload = canAddImages(role);
  const bySplit = project.data.images_by_split;
  const counts: Counts = split ? bySplit[split] : project.data.images;
  const splitCount = (s: Split | null) => {
    const c: Counts = s ? bySplit[s] : project.data.images;
    return status ? c[status] : c.total;
  };

  const choose = (nextStatus: ImageStatus | null, nextSplit: Split | null) => {
    setStatus(nextStatus);
    setSplit(nextSplit);
    const next: Record<string, string> = {};
    if (nextStatus) next.status = nextStatus;
    if (nextSplit) next.split = nextSplit;
    setParams(next, { replace: true });
  };

  const upload = (files: FileList | null) => uploads.start(fromInput(files), uploadSplit || null);

  const dropHandlers = mayUpload
    ? {
        onDragEnter: (e: DragEvent) => {
          if (!hasFiles(e)) return;
          dragDepth.current += 1;
          setDragging(true);
        },
        onDragOver: (e: DragEvent) => {
          if (!hasFiles(e)) return;
          e.preventDefault();
          e.dataTransfer.dropEffect = "copy";
        },
        onDragLeave: () => {
          dragDepth.current = Math.max(0, dragDepth.current - 1);
          if (dragDepth.current === 0) setDragging(false);
        },
        onDrop: (e: DragEvent) => {
          e.preventDefault();
          dragDepth.current = 0;
          setDragging(false);
          // Read the items now: they are gone once the event is over.
          const walk = takeDrop(e.dataTransfer.items, e.dataTransfer.files);
          const target = uploadSplit || null;
          void walk().then((found) => uploads.start(found, target));
        },
      }
    : {};

  return (
    <section className={`page gallery${dragging ? " dragging" : ""}`} {...dropHandlers}>
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">{project.data.name}</span>
      </nav>
      <div className="page-head">
        <h1>{project.data.name}</h1>
        <span className="badge" title="Your role in this project">
          {role}
        </span>
      </div>
      {project.data.description && <p className="description">{project.data.description}</p>}
      <div className="toolbar" role="toolbar" aria-label="Project actions">
        {mayUpload && (
          <>
            <label className="button file-button">
              <input
                type="file"
                multiple
                accept="image/*"
                className="visually-hidden"
                onChange={(e) => {
                  upload(e.target.files);
                  e.target.value = "";
                }}
              />
              Upload files
            </label>
            <label className="button file-button">
              <input
                type="file"
                multiple
                className="visually-hidden"
                ref={(el) => {
                  if (el) el.webkitdirectory = true;
                }}
                onChange={(e) => {
                  upload(e.target.files);
                  e.target.value = "";
                }}
              />
              Upload folder
            </label>
            <label className="inline-field">
              <span>into split</span>
              <select value={uploadSplit} onChange={(e) => setUploadSplit(e.target.value as Split | "")}>
                <option value="">none</option>
                {SPLITS.map((s) => (
                  <option key={s} value={s}>
                    {s}
                  </option>
                ))}
              </select>
            </label>
            <button type="button" onClick={() => setDialog("import")}>
              Import dataset
            </button>
          </>
        )}
        {canExport(role) && (
          <button type="button" onClick={() => setDialog("export")}>
            Export dataset
          </button>
        )}
        <Link className="button" to={`/projects/${projectId}/review`}>
          Review predictions
        </Link>
        <Link className="button" to={`/projects/${projectId}/training`}>
          Training
        </Link>
        <Link className="button" to={`/projects/${projectId}/models`}>
          Models
        </Link>
        <Link className="button" to={`/projects/${projectId}/jobs`}>
          Jobs
        </Link>
        <Link className="button" to={`/projects/${projectId}/settings`}>
          {canEditProject(role) ? "Settings" : "Members"}
        </Link>
      </div>
      {mayUpload && (
        <p className="muted drop-hint">
          Drop images or folders anywhere on this page to upload them (JPEG, PNG, WebP, BMP, TIFF).
        </p>
      )}
      <UploadPanel session={uploads} projectId={projectId} />
      <div className="filters">
        <fieldset className="segmented">
          <legend className="visually-hidden">Show images by status</legend>
          <label>
            <input type="radio" name="status" checked={status === null} onChange={() => choose(null, split)} />
            <span>All ({counts.total.toLocaleString()})</span>
          </label>
          {STATUSES.map((s) => (
            <label key={s}>
              <input type="radio" name="status" checked={status === s} onChange={() => choose(s, split)} />
              <span>
                {LABELS[s]} ({counts[s].toLocaleString()})
              </span>
            </label>
          ))}
        </fieldset>
        <fieldset className="segmented">
          <legend className="visually-hidden">Show images by split</legend>
          <label>
            <input type="radio" name="split" checked={split === null} onChange={() => choose(status, null)} />
            <span>All splits ({splitCount(null).toLocaleString()})</span>
          </label>
          {SPLITS.map((s) => (
            <label key={s}>
              <input type="radio" name="split" checked={split === s} onChange={() => choose(status, s)} />
              <span>
                {SPLIT_LABELS[s]} ({splitCount(s).toLocaleString()})
              </span>
            </label>
          ))}
        </fieldset>
      </div>
      <ImageGrid
        key={`${status ?? "all"}-${split ?? "all"}`}
        projectId={projectId}
        status={status}
        split={split}
        total={status ? counts[status] : counts.total}
      />
      {dragging && (
        <div className="drop-overlay" aria-hidden="true">
          Drop images or folders to upload them to {project.data.name}
        </div>
      )}
      {mayUpload && <ImportDialog projectId={projectId} open={dialog === "import"} onClose={() => setDialog(null)} />}
      {canExport(role) && (
        <ExportDialog projectId={projectId} open={dialog === "export"} onClose={() => setDialog(null)} />
      )}
    </section>
  );
}

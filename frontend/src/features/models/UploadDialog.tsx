// Upload `.pt` weights: the bytes go up by XMLHttpRequest (fetch reports no upload
// progress), the server scans them at once (a refusal answers with its reason), then a
// worker inspects them (the `models.inspect` job, followed live) and they become ready
// or are refused, again with the reason.
import { useQuery } from "@tanstack/react-query";
import { type FormEvent, useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import type { Schemas } from "../../api/client";
import { Dialog } from "../../components/Dialog";
import { detailOf, postForm } from "../images/upload/xhr";
import { LiveJob } from "./ModelParts";
import { formatBytes } from "../../lib/format";
import { isFinished } from "../../lib/jobs";
import { modelQuery, useLiveJob, useRefreshModels } from "./queries";

type Uploaded = Schemas["ModelUploaded"];

function Outcome({ uploaded }: { uploaded: Uploaded }) {
  const job = useLiveJob(uploaded.inspect_job_id);
  const done = isFinished(job.data);
  const model = useQuery({ ...modelQuery(uploaded.model.id), enabled: done });
  const refresh = useRefreshModels(uploaded.model.project_id);
  const modelId = uploaded.model.id;
  // Once, when the inspection ends: refresh is stable and the model is this dialog's.
  useEffect(() => {
    if (done) refresh(modelId);
  }, [done, refresh, modelId]);
  const m = model.data;
  return (
    <div className="stack">
      <p>
        Uploaded <strong>{uploaded.model.name}</strong> ({formatBytes(uploaded.model.size_bytes)}); a worker checks what
        the weights are.
      </p>
      <LiveJob jobId={uploaded.inspect_job_id} label="Inspection progress" />
      {m?.state === "ready" && (
        <p role="status" className="ok">
          Ready: a {m.task ?? "detection"} model with {m.class_names.length} class
          {m.class_names.length === 1 ? "" : "es"} ({m.class_names.join(", ")}).{" "}
          <Link to={`/projects/${m.project_id}/models/${m.id}`}>Open the model</Link>
        </p>
      )}
      {m?.state === "failed" && (
        <p role="alert" className="error">
          Refused: {m.error ?? "the weights could not be inspected"}
        </p>
      )}
    </div>
  );
}

export function UploadDialog({ projectId, open, onClose }: { projectId: number; open: boolean; onClose: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState("");
  const [progress, setProgress] = useState<{ loaded: number; total: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [uploaded, setUploaded] = useState<Uploaded | null>(null);
  const abort = useRef<AbortController | null>(null);
  const refresh = useRefreshModels(projectId);
  const sending = progress !== null && uploaded === null && error === null;

  const reset = () => {
    setFile(null);
    setName("");
    setProgress(null);
    setError(null);
    setUploaded(null);
  };

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!file) return;
    const form = new FormData();
    form.append("name", name.trim() || file.name.replace(/\.pt$/i, ""));
    form.append("file", file);
    setError(null);
    setProgress({ loaded: 0, total: file.size });
    abort.current = new AbortController();
    try {
      const response = await postForm(
        `/api/models?project_id=${projectId}`,
        form,
        (loaded, total) => setProgress({ loaded, total }),
        abort.current.signal,
      );
      if (response.status === 202) {
        setUploaded(response.body as Uploaded);
        refresh();
      } else {
        // The scan's reasons start with "refused:"; the line says "Refused:" already.
        setError(detailOf(response).replace(/^refused:\s*/i, ""));
      }
    } catch (caught) {
      setError(caught instanceof Error ? caught.message : String(caught));
    }
  };

  return (
    <Dialog open={open} onClose={onClose} title="Upload model weights">
      {uploaded ? (
        <div className="stack">
          <Outcome uploaded={uploaded} />
          <div className="actions">
            <button type="button" onClick={reset}>
              Upload another
            </button>
          </div>
        </div>
      ) : (
        <form className="stack" onSubmit={(event) => void submit(event)}>
          <p className="muted">
            YOLO detection weights saved by ultralytics (<code>.pt</code>). Files that could run code when loaded are
            refused.
          </p>
          <label className="field">
            Weights file
            <input
              type="file"
              accept=".pt"
              onChange={(e) => {
                setFile(e.target.files?.[0] ?? null);
                setError(null);
              }}
            />
          </label>
          <label className="field">
            Model name
            <input
              type="text"
              value={name}
              maxLength={200}
              placeholder={file ? file.name.replace(/\.pt$/i, "") : "e.g. yolo11n-coco"}
              onChange={(e) => setName(e.target.value)}
            />
          </label>
          {progress && (
            <div className="job-bar">
              <progress max={progress.total || 1} value={progress.loaded} aria-label="Upload progress" />
              <span className="muted">
                {formatBytes(progress.loaded)} of {formatBytes(progress.total)}
              </span>
            </div>
          )}
          {error && (
            <p role="alert" className="error">
              Refused: {error}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="primary" disabled={!file || sending}>
              {sending ? "Uploading…" : "Upload"}
            </button>
            {sending && (
              <button type="button" onClick={() => abort.current?.abort()}>
                Stop upload
              </button>
            )}
          </div>
        </form>
      )}
    </Dialog>
  );
}

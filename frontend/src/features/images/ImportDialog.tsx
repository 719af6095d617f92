import { useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useEffect, useId, useRef, useState } from "react";
import { errorMessage } from "../../api/errors";
import { keys } from "../../api/keys";
import { Dialog } from "../../components/Dialog";
import { JobProgress } from "../../components/JobProgress";
import { formatBytes } from "../../lib/format";
import type { Job } from "../../lib/jobs";
import { type ImportReport, importReport, useJob } from "./job";
import { detailOf, NetworkError, postForm } from "./upload/xhr";

type Phase =
  | { kind: "choose" }
  | { kind: "uploading"; loaded: number; total: number }
  | { kind: "job"; jobId: number };

const COUNT_LABELS: Array<[keyof ImportReport["counts"], string]> = [
  ["images_created", "Images added"],
  ["images_duplicate", "Already in the project"],
  ["images_rejected", "Images rejected"],
  ["images_labelled", "Images with labels"],
  ["images_kept_existing", "Kept their existing labels"],
  ["boxes_imported", "Boxes imported"],
  ["labels_skipped", "Label lines skipped"],
];

export function ImportResult({ report }: { report: ImportReport }) {
  return (
    <div className="job-result">
      <h3>Imported {report.format.toUpperCase()} from {report.filename}</h3>
      <dl className="result-counts" aria-label="Import counts">
        {COUNT_LABELS.map(([key, label]) => (
          <div key={key}>
            <dt>{label}</dt>
            <dd>{report.counts[key].toLocaleString()}</dd>
          </div>
        ))}
      </dl>
      {report.classes_added.length > 0 && (
        <p>New classes added to the project: {report.classes_added.join(", ")}</p>
      )}
      {report.issues_total > 0 && (
        <>
          <h4>
            {report.issues_total.toLocaleString()} issue{report.issues_total === 1 ? "" : "s"}
            {report.issues_truncated ? ` (the first ${report.issues.length.toLocaleString()} shown)` : ""}
          </h4>
          <div className="issues-scroller">
            <table className="issues" aria-label="Import issues">
              <thead>
                <tr>
                  <th scope="col">File</th>
                  <th scope="col">Line</th>
                  <th scope="col">Problem</th>
                </tr>
              </thead>
              <tbody>
                {report.issues.map((issue, i) => (
                  <tr key={i}>
                    <td>{issue.file}</td>
                    <td>{issue.line ?? ""}</td>
                    <td>{issue.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </div>
  );
}

function ImportJob({ jobId, projectId }: { jobId: number; projectId: number }) {
  const job = useJob(jobId);
  const queryClient = useQueryClient();
  const state = job.data?.state;
  useEffect(() => {
    if (state === "succeeded" || state === "failed" || state === "canceled") {
      // Images (and maybe classes) arrived, also from a job that failed halfway.
      void queryClient.invalidateQueries({ queryKey: keys.project(projectId) });
      void queryClient.invalidateQueries({ queryKey: keys.projects, exact: true });
    }
  }, [state, projectId, queryClient]);
  if (job.isError) return <p role="alert" className="error">Cannot follow the import job: {errorMessage(job.error)}</p>;
  if (!job.data) return <p className="muted">Import job {jobId} created…</p>;
  const report = importReport(job.data);
  return (
    <>
      <JobProgress job={job.data} label="Import progress" />
      {job.data.state === "succeeded" && report && <ImportResult report={report} />}
    </>
  );
}

/** Upload a YOLO or COCO zip, then follow the import job to its counts and issues. */
export function ImportDialog({ projectId, open, onClose }: { projectId: number; open: boolean; onClose: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [phase, setPhase] = useState<Phase>({ kind: "choose" });
  const [error, setError] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);
  const hintId = useId();
  const inputRef = useRef<HTMLInputElement>(null);

  useEffect(() => () => abort.current?.abort(), []);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!file) return;
    setError(null);
    const form = new FormData();
    form.append("file", file, file.name);
    const controller = new AbortController();
    abort.current = controller;
    setPhase({ kind: "uploading", loaded: 0, total: file.size });
    try {
      const response = await postForm(
        `/api/projects/${projectId}/imports`,
        form,
        (loaded, total) => setPhase({ kind: "uploading", loaded, total }),
        controller.signal,
      );
      if (response.status === 202) {
        setPhase({ kind: "job", jobId: (response.body as Job).id });
      } else {
        setError(detailOf(response));
        setPhase({ kind: "choose" });
      }
    } catch (e) {
      setError(e instanceof NetworkError ? e.message : String(e));
      setPhase({ kind: "choose" });
    }
  };

  const reset = () => {
    setPhase({ kind: "choose" });
    setFile(null);
    setError(null);
    if (inputRef.current) inputRef.current.value = "";
  };

  return (
    <Dialog
      open={open}
      onClose={onClose}
      title="Import a dataset"
      description={
        <p className="muted" id={hintId}>
          A zip in YOLO layout (images/ and labels/, data.yaml or classes.txt) or COCO layout
          (images and an annotations JSON). Its classes are matched to the project’s by name;
          new ones are appended.
        </p>
      }
    >
      {phase.kind === "choose" && (
        <form onSubmit={(event) => void submit(event)} className="stack">
          <label className="field">
            <span>Dataset zip</span>
            <input
              ref={inputRef}
              type="file"
              accept=".zip,application/zip,application/x-zip-compressed"
              onChange={(e) => setFile(e.target.files?.[0] ?? null)}
              aria-describedby={hintId}
            />
          </label>
          {error && (
            <p role="alert" className="error">
              The import was refused: {error}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="primary" disabled={!file}>
              Start import
            </button>
          </div>
        </form>
      )}
      {phase.kind === "uploading" && (
        <div className="stack">
          <p aria-live="polite">
            Uploading {file?.name}: {formatBytes(phase.loaded)} of {formatBytes(phase.total)}
          </p>
          <div className="job-bar">
            <progress max={Math.max(1, phase.total)} value={phase.loaded} aria-label={`Upload of ${file?.name ?? "the zip"}`} />
            <button type="button" onClick={() => abort.current?.abort()}>
              Cancel upload
            </button>
          </div>
        </div>
      )}
      {phase.kind === "job" && (
        <div className="stack">
          <ImportJob jobId={phase.jobId} projectId={projectId} />
          <div className="actions">
            <button type="button" onClick={reset}>
              Import another zip
            </button>
          </div>
        </div>
      )}
    </Dialog>
  );
}

import { useMutation } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { Dialog } from "../../components/Dialog";
import { JobProgress } from "../../components/JobProgress";
import { formatBytes } from "../../lib/format";
import { exportReport, useJob } from "./job";

type Format = "yolo" | "coco" | "csv";

function ExportJob({ jobId }: { jobId: number }) {
  const job = useJob(jobId);
  if (job.isError) return <p role="alert" className="error">Cannot follow the export job: {errorMessage(job.error)}</p>;
  if (!job.data) return <p className="muted">Export job {jobId} created…</p>;
  const report = exportReport(job.data);
  return (
    <>
      <JobProgress job={job.data} label="Export progress" />
      {job.data.state === "succeeded" && report && (
        <div className="job-result">
          <p>
            {report.images.toLocaleString()} image{report.images === 1 ? "" : "s"} and{" "}
            {report.boxes.toLocaleString()} box{report.boxes === 1 ? "" : "es"} in {report.format.toUpperCase()}
            {Object.keys(report.splits).length > 0 &&
              ` (${Object.entries(report.splits)
                .map(([split, n]) => `${split}: ${n.toLocaleString()}`)
                .join(", ")})`}
            .
          </p>
          {report.missing_files.length > 0 && (
            <p className="error">{report.missing_files.length} image files were missing from storage and left out.</p>
          )}
          {job.data.has_artifact && (
            <a className="button primary" href={`/api/jobs/${jobId}/artifact`} download>
              Download {String(report.format) === "csv" ? "CSV" : "zip"} ({formatBytes(report.zip_bytes)})
            </a>
          )}
        </div>
      )}
    </>
  );
}

/** Start an export (YOLO or COCO) and download its zip when the job is done. */
export function ExportDialog({ projectId, open, onClose }: { projectId: number; open: boolean; onClose: () => void }) {
  const [format, setFormat] = useState<Format>("yolo");
  const [onlyReviewed, setOnlyReviewed] = useState(true);
  const start = useMutation({
    mutationFn: async () =>
      unwrap(
        await api.POST("/api/projects/{project_id}/exports", {
          params: { path: { project_id: projectId } },
          body: { format, only_reviewed: onlyReviewed },
        }),
      ),
  });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    start.mutate();
  };

  return (
    <Dialog open={open} onClose={onClose} title="Export the dataset">
      {!start.data ? (
        <form onSubmit={submit} className="stack">
          <fieldset className="radios">
            <legend>Format</legend>
            <label>
              <input type="radio" name="format" checked={format === "yolo"} onChange={() => setFormat("yolo")} />
              YOLO (images/, labels/, data.yaml)
            </label>
            <label>
              <input type="radio" name="format" checked={format === "coco"} onChange={() => setFormat("coco")} />
              COCO (images/, annotations/instances_&lt;split&gt;.json)
            </label>
            <label>
              <input type="radio" name="format" checked={format === "csv"} onChange={() => setFormat("csv")} />
              CSV of the boxes: file, class, confidence, box (no images; untick “Only reviewed” for predictions)
            </label>
          </fieldset>
          <label className="check">
            <input type="checkbox" checked={onlyReviewed} onChange={(e) => setOnlyReviewed(e.target.checked)} />
            Only reviewed images (with their accepted boxes)
          </label>
          {start.isError && (
            <p role="alert" className="error">
              The export was refused: {errorMessage(start.error)}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="primary" disabled={start.isPending}>
              {start.isPending ? "Starting…" : "Start export"}
            </button>
          </div>
        </form>
      ) : (
        <div className="stack">
          <ExportJob jobId={start.data.id} />
          <div className="actions">
            <button type="button" onClick={() => start.reset()}>
              New export
            </button>
          </div>
        </div>
      )}
    </Dialog>
  );
}

import { useMutation } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import { errorMessage, unwrap } from "../api/errors";
import { isFinished, type Job, jobStatusText } from "../lib/jobs";

/** A job's state and progress bar, with a cancel button while it is not finished. */
export function JobProgress({ job, label, children }: { job: Job; label: string; children?: ReactNode }) {
  const cancel = useMutation({
    mutationFn: async () =>
      unwrap(await api.POST("/api/jobs/{job_id}/cancel", { params: { path: { job_id: job.id } } })),
  });
  const finished = isFinished(job);
  return (
    <div className="job-progress">
      <p aria-live="polite" className={job.state === "failed" ? "error" : undefined}>
        <Link to={`/jobs/${job.id}`} className="muted">
          Job {job.id}
        </Link>
        : {jobStatusText(job)}
      </p>
      {!finished && (
        <div className="job-bar">
          <progress max={1} value={job.progress} aria-label={label} />
          <span className="muted">{Math.round(job.progress * 100)} %</span>
          <button type="button" onClick={() => cancel.mutate()} disabled={cancel.isPending}>
            Cancel job
          </button>
        </div>
      )}
      {cancel.isError && (
        <p role="alert" className="error">
          Could not cancel: {errorMessage(cancel.error)}
        </p>
      )}
      {children}
    </div>
  );
}

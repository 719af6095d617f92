// One job: where it stands (live through its event stream), its log, its outcome,
// and Cancel for those who may.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type ReactNode, useRef, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { Dialog } from "../../components/Dialog";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canCancelJob } from "../../lib/permissions";
import { meQuery } from "../auth/queries";
import { isUnfinished, type Job, kindLabel, poolLabel } from "./format";
import { JobLog, type JobLogHandle } from "./JobLog";
import { JobResult } from "./JobResult";
import { Duration, JobStatus } from "./parts";
import { jobQuery, projectQuery } from "./queries";
import { type StreamState, useJobEvents } from "./useJobEvents";
import "./jobs.css";

const STREAM_TEXT: Record<StreamState, string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  ended: "",
};

function when(value: string | null): string {
  return value ? new Date(value).toLocaleString() : "—";
}

function CancelJob({ job }: { job: Job }) {
  const [open, setOpen] = useState(false);
  const queryClient = useQueryClient();
  const cancel = useMutation({
    mutationFn: async () =>
      unwrap(await api.POST("/api/jobs/{job_id}/cancel", { params: { path: { job_id: job.id } } })),
    onSuccess: (canceled) => {
      queryClient.setQueryData(keys.job(job.id), canceled);
      void queryClient.invalidateQueries({ queryKey: ["jobs", "list"] });
      setOpen(false);
    },
  });
  const running = job.state === "running";
  return (
    <>
      <button type="button" className="danger" onClick={() => setOpen(true)}>
        Cancel job
      </button>
      <Dialog
        open={open}
        onClose={() => setOpen(false)}
        title={`Cancel job ${job.id}?`}
        description={
          <p>
            {running
              ? "The job stops at its next step; what it did so far stays (a training run keeps no model)."
              : "The job leaves the queue and never runs."}
          </p>
        }
      >
        {cancel.isError && (
          <p role="alert" className="error">
            Could not cancel: {errorMessage(cancel.error)}
          </p>
        )}
        <div className="actions">
          <button type="button" className="danger-solid" onClick={() => cancel.mutate()} disabled={cancel.isPending}>
            {cancel.isPending ? "Canceling…" : `Yes, cancel job ${job.id}`}
          </button>
          <button type="button" onClick={() => setOpen(false)}>
            {running ? "Keep it running" : "Keep it waiting"}
          </button>
        </div>
      </Dialog>
    </>
  );
}

function Facts({ job }: { job: Job }) {
  const facts: Array<[string, ReactNode]> = [
    ["Pool", poolLabel(job.pool)],
    ["Worker", job.worker ?? "—"],
    ["GPU", job.gpu !== null ? `GPU ${job.gpu}` : "—"],
    ["Attempts", `${job.attempts} of ${job.max_attempts}`],
    ["Priority", String(job.priority)],
    ["Started by", job.created_by_name ?? "—"],
    ["Submitted", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Duration", <Duration key="d" job={job} />],
  ];
  return (
    <dl className="job-facts" aria-label="Job details">
      {facts.map(([name, value]) => (
        <div key={name}>
          <dt>{name}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export function JobPage() {
  const jobId = Number(useParams().jobId);
  const valid = Number.isSafeInteger(jobId) && jobId > 0;
  const job = useQuery({ ...jobQuery(jobId), enabled: valid });
  const me = useQuery(meQuery);
  const projectId = job.data?.project_id ?? null;
  const project = useQuery({ ...projectQuery(projectId ?? 0), enabled: projectId !== null });
  const log = useRef<JobLogHandle>(null);
  const stream = useJobEvents(valid && job.isSuccess ? jobId : null, {
    onLog: (event) => {
      if (typeof event.data.line === "string") log.current?.push([{ id: event.id, line: event.data.line }]);
    },
  });
  const kind = job.data ? kindLabel(job.data.kind) : null;
  useTitle(kind ? `Job ${jobId} (${kind})` : "Job");

  if (!valid) return <ErrorMessage error={new Error("There is no job at this address.")} title="Not found" />;
  if (job.isPending) return <p className="page-status">Loading job…</p>;
  if (job.isError) return <ErrorMessage error={job.error} />;
  const data = job.data;
  const mayCancel =
    isUnfinished(data) && me.data !== undefined && canCancelJob(data, me.data, project.data?.role ?? null);

  return (
    <section className="page job-page">
      <nav aria-label="Breadcrumb" className="crumbs">
        {data.project_id !== null ? (
          <>
            <Link to="/projects">Projects</Link> ›{" "}
            <Link to={`/projects/${data.project_id}`}>{project.data?.name ?? "Project"}</Link> ›{" "}
            <Link to={`/projects/${data.project_id}/jobs`}>Jobs</Link>
          </>
        ) : (
          <Link to="/jobs">Jobs</Link>
        )}{" "}
        › Job {data.id}
      </nav>
      <div className="page-head">
        <h1>
          Job {data.id}: {kind}
        </h1>
        {isUnfinished(data) && STREAM_TEXT[stream] && (
          <span className="muted small live-note">
            <span className={stream === "live" ? "live-dot" : "live-dot off"} aria-hidden="true" />
            {STREAM_TEXT[stream]}
          </span>
        )}
        {mayCancel && <CancelJob job={data} />}
      </div>
      <div className="card job-header">
        <div aria-live="polite">
          <JobStatus job={data} label="Job progress" />
          {/* A finished job's last progress note is stale; the outcome below says more. */}
          {data.message && isUnfinished(data) && <p className="job-message">{data.message}</p>}
        </div>
        <Facts job={data} />
      </div>
      <JobResult job={data} />
      <JobLog ref={log} jobId={data.id} />
    </section>
  );
}

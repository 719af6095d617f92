// Pieces the registry's pages share: a model's state, lineage, metrics and actions, and
// a job followed live.
import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { Link } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { Dialog } from "../../components/Dialog";
import { canManageModels, type Role } from "../../lib/permissions";
import { JobProgress } from "../../components/JobProgress";
import type { Job } from "../../lib/jobs";
import {
  METRICS,
  metricOf,
  type Model,
  STATE_LABELS,
  useLiveJob,
  useRefreshModels,
} from "./queries";

export function StateBadge({ model }: { model: Model }) {
  return <span className={`badge model-state model-${model.state}`}>{STATE_LABELS[model.state]}</span>;
}

export function PromotedBadge() {
  return (
    <span className="badge promoted" title="The project's default model for auto-labeling">
      Promoted
    </span>
  );
}

/** Where a model came from: the file it was uploaded as, or the run that trained it. */
export function Lineage({ model }: { model: Model }) {
  if (model.source !== "training") {
    return (
      <span>
        Uploaded as <code>{model.filename}</code>
      </span>
    );
  }
  return (
    <span className="lineage">
      {model.base && (
        <span>
          Base{" "}
          {model.base_model_id !== null ? (
            <Link to={`/projects/${model.project_id}/models/${model.base_model_id}`}>model {model.base_model_id}</Link>
          ) : (
            <code>{model.base}</code>
          )}
        </span>
      )}
      {model.dataset_snapshot && (
        <span title={`Dataset snapshot ${model.dataset_snapshot}`}>
          dataset <code>{model.dataset_snapshot.slice(0, 12)}</code>
        </span>
      )}
      {model.job_id !== null && (
        <span>
          <Link to={`/projects/${model.project_id}/training/${model.job_id}`}>training run</Link> (
          <Link to={`/jobs/${model.job_id}`}>job {model.job_id}</Link>)
        </span>
      )}
    </span>
  );
}

export function Metrics({ model, explain = false }: { model: Model; explain?: boolean }) {
  const present = METRICS.map(([key, label]) => [label, metricOf(model, key)] as const).filter(([, v]) => v !== null);
  if (present.length === 0) {
    const why = model.source === "training" ? "None recorded." : "None: measured only for models trained here.";
    return <span className="muted">{explain ? why : "—"}</span>;
  }
  return (
    <dl className="metrics">
      {present.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{(value ?? 0).toFixed(3)}</dd>
        </div>
      ))}
    </dl>
  );
}

function PromoteButton({ model, current }: { model: Model; current: Model | null }) {
  const [open, setOpen] = useState(false);
  const refresh = useRefreshModels(model.project_id);
  const promote = useMutation({
    mutationFn: async () =>
      unwrap(await api.POST("/api/models/{model_id}/promote", { params: { path: { model_id: model.id } } })),
    onSuccess: () => {
      refresh(model.id);
      if (current) refresh(current.id);
      setOpen(false);
    },
  });
  return (
    <>
      <button type="button" onClick={() => setOpen(true)} aria-label={`Promote ${model.name}`}>
        Promote
      </button>
      <Dialog
        open={open}
        onClose={() => setOpen(false)}
        title={`Promote ${model.name}?`}
        description={
          <p>
            It becomes the project&apos;s default model for auto-labeling
            {current ? `, in place of ${current.name}` : ""}.
          </p>
        }
      >
        {promote.isError && (
          <p role="alert" className="error">
            Could not promote: {errorMessage(promote.error)}
          </p>
        )}
        <div className="actions">
          <button type="button" className="primary" onClick={() => promote.mutate()} disabled={promote.isPending}>
            {promote.isPending ? "Promoting…" : "Promote"}
          </button>
          <button type="button" onClick={() => setOpen(false)}>
            Cancel
          </button>
        </div>
      </Dialog>
    </>
  );
}

/** Download, and for owners promote (ready models that are not the default yet). */
export function ModelActions({ model, role, current }: { model: Model; role: Role | null | undefined; current: Model | null }) {
  return (
    <div className="actions model-actions">
      <a className="button" href={`/api/models/${model.id}/download`} download aria-label={`Download ${model.name}`}>
        Download
      </a>
      {canManageModels(role) && model.state === "ready" && !model.promoted && (
        <PromoteButton model={model} current={current} />
      )}
    </div>
  );
}

/** A job's state and progress as its events arrive, with cancel while it runs. */
export function LiveJob({ jobId, label, children }: { jobId: number; label: string; children?: (job: Job) => React.ReactNode }) {
  const job = useLiveJob(jobId);
  if (job.isError) return <p role="alert" className="error">Cannot follow job {jobId}: {errorMessage(job.error)}</p>;
  if (!job.data) return <p className="muted">Job {jobId} created…</p>;
  return (
    <JobProgress job={job.data} label={label}>
      {children?.(job.data)}
    </JobProgress>
  );
}

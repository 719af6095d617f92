// The admin's GPU queue, for a wall screen: pools, the ordered queue, workers with live
// GPU sparklines, who uses what, and the levers (priority, cancel, drain, quotas).
// Live through server-sent events (polling every 2 s when the stream fails).
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, memo, useCallback, useMemo, useState } from "react";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { Dialog } from "../../components/Dialog";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { kindLabel, type QueuedJob, type QueueView, type WorkerSummary } from "./queueData";
import { QuotasPanel } from "./queueQuotas";
import { type JobAction, QueueTable } from "./QueueTable";
import { WorkersPanel } from "./queueWorkers";
import { queueKey, useQueueView } from "./useQueueView";
import "./queue.css";

const Quotas = memo(QuotasPanel);
// A view whose jobs did not change (most updates: only GPU figures moved) skips the table.
const Table = memo(QueueTable);

const FEED_TEXT = { connecting: "Connecting…", live: "Live", polling: "Polling every 2 s" } as const;

// Memoised: a stream update that carries only workers leaves these arrays as they were.
const PoolsTable = memo(function PoolsTable({ pools }: { pools: QueueView["pools"] }) {
  return (
    <table className="members pools">
      <caption className="visually-hidden">Pools</caption>
      <thead>
        <tr>
          <th scope="col">Pool</th>
          <th scope="col">Queued</th>
          <th scope="col">Running</th>
          <th scope="col">Slots</th>
          <th scope="col">Workers</th>
          <th scope="col">GPUs</th>
          <th scope="col">Per-user limit</th>
        </tr>
      </thead>
      <tbody>
        {pools.map((pool) => (
          <tr key={pool.name}>
            <th scope="row">
              {pool.name} <span className="muted small">{pool.gpu ? "GPU" : "CPU"}</span>
            </th>
            <td>{pool.queued.toLocaleString()}</td>
            <td>{pool.running.toLocaleString()}</td>
            <td>{pool.slots}</td>
            <td>{pool.workers}</td>
            <td>{pool.gpus}</td>
            <td>{pool.per_user_limit}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
});

function counts(byPool: Record<string, number>): string {
  const parts = Object.entries(byPool).map(([pool, n]) => `${n} ${pool}`);
  return parts.length ? parts.join(", ") : "—";
}

const UsageTable = memo(function UsageTable({ users }: { users: QueueView["users"] }) {
  if (users.length === 0) return <p className="muted">Nobody has a job waiting or running.</p>;
  return (
    <table className="members">
      <caption className="visually-hidden">Jobs per user</caption>
      <thead>
        <tr>
          <th scope="col">User</th>
          <th scope="col">Running</th>
          <th scope="col">Queued</th>
        </tr>
      </thead>
      <tbody>
        {users.map((u) => (
          <tr key={u.user_id ?? "system"}>
            <th scope="row">{u.username ?? "system"}</th>
            <td>{counts(u.running)}</td>
            <td>{counts(u.queued)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
});

function PriorityDialog({ job, onClose }: { job: QueuedJob | null; onClose: () => void }) {
  const queryClient = useQueryClient();
  const [value, setValue] = useState("");
  const change = useMutation({
    mutationFn: async ({ id, priority }: { id: number; priority: number }) =>
      unwrap(await api.POST("/api/admin/jobs/{job_id}/priority", { params: { path: { job_id: id } }, body: { priority } })),
    onSuccess: async () => {
      await queryClient.invalidateQueries({ queryKey: queueKey });
      onClose();
    },
  });
  const number = Number(value === "" ? job?.priority : value);
  const valid = Number.isInteger(number) && number >= -999 && number <= 999;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (job && valid) change.mutate({ id: job.id, priority: number });
  };
  return (
    <Dialog
      open={job !== null}
      onClose={() => {
        change.reset();
        setValue("");
        onClose();
      }}
      title={job ? `Priority of job #${job.id}` : "Priority"}
      description={job && `${kindLabel(job.kind)} by ${job.created_by_name ?? "system"}; higher runs first (−999 to 999).`}
    >
      <form className="stack" onSubmit={submit}>
        <label className="field">
          <span>Priority</span>
          <input
            type="number"
            min={-999}
            max={999}
            step={1}
            value={value === "" ? String(job?.priority ?? 0) : value}
            onChange={(e) => setValue(e.target.value)}
          />
        </label>
        {change.isError && (
          <p role="alert" className="error">
            {errorMessage(change.error)}
          </p>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={!valid || change.isPending}>
            Save priority
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function CancelDialog({ job, onClose }: { job: QueuedJob | null; onClose: () => void }) {
  const queryClient = useQueryClient();
  const cancel = useMutation({
    mutationFn: async (id: number) => unwrap(await api.POST("/api/jobs/{job_id}/cancel", { params: { path: { job_id: id } } })),
    onSuccess: async () => {
      await queryClient.invalidateQueries({ queryKey: queueKey });
      onClose();
    },
  });
  return (
    <Dialog
      open={job !== null}
      onClose={() => {
        cancel.reset();
        onClose();
      }}
      title={job ? `Cancel job #${job.id}?` : "Cancel job"}
      description={
        job &&
        `${kindLabel(job.kind)} by ${job.created_by_name ?? "system"}${job.project_name ? ` in ${job.project_name}` : ""}. ` +
          (job.state === "running" ? "It stops at its next progress report." : "It will not run.")
      }
    >
      {cancel.isError && (
        <p role="alert" className="error">
          {errorMessage(cancel.error)}
        </p>
      )}
      <div className="actions">
        <button type="button" className="danger-solid" disabled={cancel.isPending} onClick={() => job && cancel.mutate(job.id)}>
          Cancel the job
        </button>
      </div>
    </Dialog>
  );
}

export function QueuePage() {
  useTitle("GPU queue");
  const queryClient = useQueryClient();
  const { query, feed, history } = useQueueView();
  const [acting, setActing] = useState<{ job: QueuedJob; action: JobAction } | null>(null);
  const [pool, setPool] = useState<string>("all");
  const onAction = useCallback((job: QueuedJob, action: JobAction) => setActing({ job, action }), []);
  const drain = useMutation({
    mutationFn: async ({ worker, draining }: { worker: WorkerSummary; draining: boolean }) =>
      unwrap(
        await api.POST("/api/admin/workers/{worker_id}/drain", {
          params: { path: { worker_id: worker.id } },
          body: { draining },
        }),
      ),
    onSettled: () => queryClient.invalidateQueries({ queryKey: queueKey }),
  });
  const { mutate: drainWorker } = drain;
  const onDrain = useCallback(
    (worker: WorkerSummary, draining: boolean) => drainWorker({ worker, draining }),
    [drainWorker],
  );
  const view = query.data;
  const jobs = useMemo(
    () => (view ? (pool === "all" ? view.jobs : view.jobs.filter((j) => j.pool === pool)) : []),
    [view, pool],
  );

  if (query.isPending) return <p className="page-status">Loading the queue…</p>;
  if (query.isError && !view) return <ErrorMessage error={query.error} />;
  if (!view) return null;
  const waiting = view.pools.reduce((n, p) => n + p.queued, 0);
  const running = view.pools.reduce((n, p) => n + p.running, 0);

  return (
    <section className="page queue-page">
      <div className="page-head">
        <h1>GPU queue</h1>
        <span className={`feed feed-${feed}`} role="status">
          {FEED_TEXT[feed]}
        </span>
      </div>
      <PoolsTable pools={view.pools} />

      <section aria-labelledby="queue-title" className="queue-section">
        <div className="section-head">
          <h2 id="queue-title">
            Queue <span className="muted small">{running.toLocaleString()} running · {waiting.toLocaleString()} waiting</span>
          </h2>
          <label className="inline-field">
            Pool
            <select value={pool} onChange={(e) => setPool(e.target.value)}>
              <option value="all">all pools</option>
              {view.pools.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name}
                </option>
              ))}
            </select>
          </label>
        </div>
        <Table jobs={jobs} onAction={onAction} />
      </section>

      <section aria-labelledby="workers-title" className="queue-section">
        <h2 id="workers-title">
          Workers <span className="muted small">{view.workers.length}</span>
        </h2>
        {drain.isError && (
          <p role="alert" className="error">
            Could not change the worker: {errorMessage(drain.error)}
          </p>
        )}
        <WorkersPanel
          workers={view.workers}
          history={history}
          interval={view.heartbeat_interval_seconds}
          onDrain={onDrain}
          pending={drain.isPending ? (drain.variables?.worker.id ?? null) : null}
        />
      </section>

      <section aria-labelledby="usage-title" className="queue-section">
        <h2 id="usage-title">Jobs per user</h2>
        <UsageTable users={view.users} />
      </section>

      <Quotas pools={view.pools} />

      <PriorityDialog job={acting?.action === "priority" ? acting.job : null} onClose={() => setActing(null)} />
      <CancelDialog job={acting?.action === "cancel" ? acting.job : null} onClose={() => setActing(null)} />
    </section>
  );
}

// The ordered queue, virtualised: a thousand waiting jobs cost the DOM of the ~20 rows
// on screen. Rows are memoised on the fields they show (sameRow), so a new view
// re-renders only rows that changed; wait times tick without React (queueClock).
import { useVirtualizer } from "@tanstack/react-virtual";
import { memo, useEffect, useRef } from "react";
import { Link } from "react-router";
import { kindLabel, ordinal, type QueuedJob, sameRow } from "./queueData";
import { Age } from "./queueClock";

export const ROW_HEIGHT = 40;
// Fourteen rows; CSS also caps it at 60% of the screen.
const SCROLLER_MAX = 14 * ROW_HEIGHT;

export type JobAction = "priority" | "cancel";

function Waited({ job }: { job: QueuedJob }) {
  const started = job.state === "running" ? job.started_at : null;
  return <Age since={started ?? job.created_at} prefix={started ? "running " : ""} />;
}

function where(job: QueuedJob): string {
  if (job.state === "running") {
    const gpu = job.gpu !== null ? ` · GPU ${job.gpu}` : "";
    return `Running on ${job.worker ?? "?"}${gpu} · ${Math.round(job.progress * 100)}%`;
  }
  if (job.cancel_requested) return "Canceling";
  if (job.position === 0) return "Starting";
  return job.position ? `${ordinal(job.position)} in line` : "Waiting";
}

interface RowProps {
  job: QueuedJob;
  index: number;
  top: number;
  onAction: (job: QueuedJob, action: JobAction) => void;
}

const Row = memo(
  function Row({ job, index, top, onAction }: RowProps) {
    const waiting = job.state === "queued";
    const label = `job ${job.id}`;
    return (
      <div
        role="row"
        aria-rowindex={index + 2}
        className={`queue-row ${job.state === "running" ? "is-running" : ""}`}
        style={{ transform: `translateY(${top}px)` }}
        data-job-id={job.id}
      >
        <span role="cell" className="num">
          {job.position ? job.position : job.state === "running" ? "▶" : "–"}
        </span>
        <span role="cell">
          <Link to={`/jobs/${job.id}`}>#{job.id}</Link> {kindLabel(job.kind)}
        </span>
        <span role="cell" className="clip">{job.created_by_name ?? "system"}</span>
        <span role="cell" className="clip">
          {job.project_id !== null ? (job.project_name ?? `project ${job.project_id}`) : "—"}
        </span>
        <span role="cell">{job.pool}</span>
        <span role="cell" className="clip">{where(job)}</span>
        <span role="cell" className="num">{job.priority}</span>
        <span role="cell" className="num">
          <Waited job={job} />
        </span>
        <span role="cell" className="row-actions">
          {waiting && (
            <button type="button" className="small" onClick={() => onAction(job, "priority")} aria-label={`Change priority of ${label}`}>
              Priority
            </button>
          )}
          {!job.cancel_requested && (
            <button type="button" className="small danger" onClick={() => onAction(job, "cancel")} aria-label={`Cancel ${label}`}>
              Cancel
            </button>
          )}
        </span>
      </div>
    );
  },
  (a, b) => a.top === b.top && a.index === b.index && a.onAction === b.onAction && sameRow(a.job, b.job),
);

const COLUMNS = ["Place", "Job", "User", "Project", "Pool", "State", "Priority", "Waiting", "Actions"];

export function QueueTable({ jobs, onAction }: { jobs: QueuedJob[]; onAction: RowProps["onAction"] }) {
  const scroller = useRef<HTMLDivElement | null>(null);
  const marked = useRef(false);
  const virtualizer = useVirtualizer({
    count: jobs.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 10,
    getItemKey: (index) => jobs[index]?.id ?? index,
    initialRect: { width: 1000, height: 600 },
  });

  useEffect(() => {
    // For bench/ui_queue.py: when the first rows were on screen.
    if (!marked.current && jobs.length > 0) {
      marked.current = true;
      performance.mark?.("queue-first-rows");
    }
  }, [jobs.length]);

  if (jobs.length === 0) return <p className="empty">No job is waiting or running.</p>;
  return (
    <div role="table" aria-label="Queue" aria-rowcount={jobs.length + 1} className="queue-table">
      <div role="rowgroup">
        <div role="row" aria-rowindex={1} className="queue-row queue-head">
          {COLUMNS.map((name) => (
            <span role="columnheader" key={name}>
              {name}
            </span>
          ))}
        </div>
      </div>
      <div
        ref={scroller}
        className="queue-scroller"
        role="rowgroup"
        style={{ height: Math.min(virtualizer.getTotalSize(), SCROLLER_MAX) }}
      >
        <div className="queue-inner" style={{ height: virtualizer.getTotalSize() }}>
          {virtualizer.getVirtualItems().map((item) => {
            const job = jobs[item.index];
            return job ? <Row key={job.id} job={job} index={item.index} top={item.start} onAction={onAction} /> : null;
          })}
        </div>
      </div>
    </div>
  );
}

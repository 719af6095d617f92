// A job's log: the history from GET /api/jobs/{id}/logs, then the live lines the
// page's event stream hands over. It follows the end while the reader is there and
// stops as soon as they scroll up; "Follow the log" takes them back.
import { useQuery } from "@tanstack/react-query";
import { forwardRef, useCallback, useEffect, useImperativeHandle, useLayoutEffect, useRef, useState } from "react";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { appendLines, atBottom, type LogLine } from "./format";

// Lines kept on the page: enough for any real job's story, bounded for a runaway one.
export const LOG_CAP = 5000;
const HISTORY_PAGE = 1000; // the server's page size for /logs
const HISTORY_PAGES = 10;

export interface JobLogHandle {
  /** New lines from the event stream; drawn together at the next frame. */
  push: (lines: LogLine[]) => void;
}

function toLines(events: Array<{ id: number; kind: string; data: Record<string, unknown> }>): LogLine[] {
  return events
    .filter((e) => e.kind === "log" && typeof e.data.line === "string")
    .map((e) => ({ id: e.id, line: e.data.line as string }));
}

async function fetchHistory(jobId: number): Promise<LogLine[]> {
  let lines: LogLine[] = [];
  let after = 0;
  for (let page = 0; page < HISTORY_PAGES; page++) {
    const events = unwrap(
      await api.GET("/api/jobs/{job_id}/logs", { params: { path: { job_id: jobId }, query: { after } } }),
    );
    lines = appendLines(lines, toLines(events), LOG_CAP);
    const end = events.at(-1);
    if (events.length < HISTORY_PAGE || end === undefined) break;
    after = end.id;
  }
  return lines;
}

export const JobLog = forwardRef<JobLogHandle, { jobId: number }>(function JobLog({ jobId }, ref) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [following, setFollowing] = useState(true);
  const scroller = useRef<HTMLDivElement>(null);
  const pending = useRef<LogLine[]>([]);
  const frame = useRef<number | null>(null);

  const history = useQuery({
    queryKey: ["jobs", jobId, "log-history"],
    queryFn: () => fetchHistory(jobId),
    staleTime: Number.POSITIVE_INFINITY,
    gcTime: 0,
  });
  useEffect(() => {
    if (history.data) setLines((held) => appendLines(held, history.data, LOG_CAP));
  }, [history.data]);

  const flush = useCallback(() => {
    frame.current = null;
    const batch = pending.current;
    pending.current = [];
    if (batch.length > 0) setLines((held) => appendLines(held, batch, LOG_CAP));
  }, []);

  useImperativeHandle(
    ref,
    () => ({
      push: (incoming) => {
        pending.current.push(...incoming);
        // A hidden tab gets no frames: keep the backlog bounded meanwhile.
        if (pending.current.length > LOG_CAP) pending.current = pending.current.slice(-LOG_CAP);
        if (frame.current === null) frame.current = requestAnimationFrame(flush);
      },
    }),
    [flush],
  );
  useEffect(
    () => () => {
      if (frame.current !== null) cancelAnimationFrame(frame.current);
    },
    [],
  );

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && following) el.scrollTop = el.scrollHeight;
  }, [lines, following]);

  const dropped = lines.length >= LOG_CAP;
  return (
    <section aria-labelledby="job-log-heading" className="job-log-section">
      <div className="job-log-head">
        <h2 id="job-log-heading">Log</h2>
        <span className="muted small" aria-live="polite">
          {lines.length === 0 ? "" : `${lines.length.toLocaleString()} line${lines.length === 1 ? "" : "s"}`}
          {dropped ? " (the oldest are not shown)" : ""}
        </span>
        <button
          type="button"
          aria-pressed={following}
          onClick={() => {
            setFollowing(true);
            const el = scroller.current;
            if (el) el.scrollTop = el.scrollHeight;
          }}
        >
          {following ? "Following the log" : "Follow the log"}
        </button>
      </div>
      {history.isError && (
        <p role="alert" className="error">
          Could not load the log: {errorMessage(history.error)}
        </p>
      )}
      <div
        ref={scroller}
        className="job-log"
        role="log"
        aria-label="Job log"
        // Focusable so keyboard users can scroll it.
        // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex -- a scrollable log
        tabIndex={0}
        onScroll={(event) => {
          const bottom = atBottom(event.currentTarget);
          if (bottom !== following) setFollowing(bottom);
        }}
      >
        {lines.length === 0 && !history.isPending && <p className="muted">Nothing logged yet.</p>}
        {lines.map((l) => (
          <div key={l.id} className="job-log-line">
            {l.line}
          </div>
        ))}
      </div>
    </section>
  );
});

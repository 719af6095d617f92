import { useVirtualizer } from "@tanstack/react-virtual";
import { useEffect, useMemo, useRef, useState } from "react";
import { Link } from "react-router";
import type { UploadFile } from "./batcher";
import { type UploadSession, useUploadVersion } from "./useUploads";

const ROW = 30;

function statusText(f: UploadFile): string {
  switch (f.status) {
    case "queued":
      return "Waiting";
    case "uploading":
      return `Uploading ${Math.round(f.progress * 100)} %`;
    case "processing":
      return "Checking…";
    case "created":
      return "Created";
    case "duplicate":
      return "Duplicate: already in the project";
    case "rejected":
      return `Rejected: ${f.reason ?? "not accepted"}`;
    case "failed":
      return `Failed: ${f.reason ?? "not sent"}`;
  }
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

function FileRow({ file, projectId }: { file: UploadFile; projectId: number }) {
  const busy = file.status === "uploading" || file.status === "processing";
  return (
    <>
      <span className="upload-path" title={file.path}>
        {file.imageId !== null ? (
          <Link to={`/projects/${projectId}/images/${file.imageId}`}>{file.path}</Link>
        ) : (
          file.path
        )}
      </span>
      {busy ? (
        <progress max={1} value={file.progress} aria-label={`Upload of ${file.path}`} />
      ) : (
        <span className="upload-bar-placeholder" aria-hidden="true" />
      )}
      <span className={`upload-status upload-${file.status}`}>{statusText(file)}</span>
    </>
  );
}

/** Per-file progress and results of the uploads on this page, with retry. */
export function UploadPanel({ session, projectId }: { session: UploadSession; projectId: number }) {
  const version = useUploadVersion(session);
  const { queue, skipped, unreadable } = session;
  const [problemsOnly, setProblemsOnly] = useState(false);
  const scroller = useRef<HTMLDivElement | null>(null);

  // The queue mutates its files in place; `version` says when to look again.
  // eslint-disable-next-line react-hooks/exhaustive-deps -- version invalidates the in-place queue
  const counts = useMemo(() => queue?.counts(), [queue, version]);
  const rows = useMemo(
    () =>
      (queue?.files ?? []).filter((f) => !problemsOnly || f.status === "rejected" || f.status === "failed"),
    // eslint-disable-next-line react-hooks/exhaustive-deps -- version invalidates the in-place queue
    [queue, version, problemsOnly],
  );
  const failed = queue?.failedBatches ?? [];
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW,
    overscan: 8,
  });

  const busy = queue !== null && !queue.settled;
  useEffect(() => {
    if (!busy) return;
    // Closing the tab now would drop the files not sent yet.
    const warn = (event: BeforeUnloadEvent) => event.preventDefault();
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [busy]);

  if (!queue || !counts) {
    if (skipped === 0 && unreadable.length === 0) return null;
  }
  const total = counts?.total ?? 0;
  const done = counts ? counts.created + counts.duplicate + counts.rejected + counts.failed : 0;
  const settled = queue?.settled ?? true;

  return (
    <section className="upload-panel" aria-label="Uploads">
      <div className="upload-head">
        <h2>{settled ? "Upload finished" : `Uploading ${plural(total, "file")}`}</h2>
        {counts && (
          <p className="upload-summary" aria-live="polite">
            {done.toLocaleString()} of {plural(total, "file")} done: {counts.created.toLocaleString()} created · {plural(counts.duplicate, "duplicate")} ·{" "}
            {counts.rejected.toLocaleString()} rejected · {counts.failed.toLocaleString()} failed
          </p>
        )}
        <div className="upload-actions">
          {failed.length > 0 && (
            <button type="button" className="primary" onClick={() => queue?.retryFailed()}>
              Retry failed ({plural(failed.reduce((n, b) => n + b.files.length, 0), "file")})
            </button>
          )}
          {!settled && (
            <button type="button" onClick={() => queue?.cancel()}>
              Cancel upload
            </button>
          )}
          {settled && (
            <button type="button" onClick={() => session.clear()}>
              Close
            </button>
          )}
        </div>
      </div>
      {counts && (
        <progress
          className="upload-total"
          max={Math.max(1, counts.total)}
          value={counts.sent}
          aria-label="Upload progress"
        />
      )}
      {(skipped > 0 || unreadable.length > 0) && (
        <p className="muted">
          {skipped > 0 && `${plural(skipped, "hidden or system file")} left out. `}
          {unreadable.length > 0 && `The browser could not read: ${unreadable.join(", ")}.`}
        </p>
      )}
      {failed.length > 0 && (
        <ul className="failed-batches" aria-label="Failed batches">
          {failed.map((batch) => (
            <li key={batch.id} className="error">
              Batch {batch.id + 1} ({plural(batch.files.length, "file")}): {batch.error}
            </li>
          ))}
        </ul>
      )}
      {queue && (
        <>
          <label className="check">
            <input type="checkbox" checked={problemsOnly} onChange={(e) => setProblemsOnly(e.target.checked)} />
            Show only rejected and failed files
          </label>
          <div
            ref={scroller}
            className="upload-list-scroller"
            // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex -- a scrollable region: focusable so keyboard users can scroll it
            tabIndex={0}
            role="region"
            aria-label="Uploaded files"
          >
            <ul className="upload-list" aria-label="Files" style={{ height: virtualizer.getTotalSize() }}>
              {virtualizer.getVirtualItems().map((item) => {
                const file = rows[item.index];
                if (!file) return null;
                return (
                  <li
                    key={file.id}
                    className="upload-row"
                    style={{ transform: `translateY(${item.start}px)`, height: ROW }}
                  >
                    <FileRow file={file} projectId={projectId} />
                  </li>
                );
              })}
            </ul>
          </div>
        </>
      )}
    </section>
  );
}

// The review queue: predicted images, the least confident first. One key accepts the
// image's predictions and moves on (A), another opens it in the editor to fix (E or
// Enter); X rejects them all, J/K or the arrows skip.
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ApiError, errorMessage } from "../../api/errors";
import { keys } from "../../api/keys";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { boxesQuery, projectQuery, type QueueItem, queueQuery, reviewImage } from "./api";
import "./review.css";

type Verdict = "accepted" | "rejected";

function Preview({ item, colors, classNames }: { item: QueueItem; colors: string[]; classNames: string[] }) {
  const boxes = useQuery(boxesQuery(item.id));
  const predicted = (boxes.data?.boxes ?? []).filter((b) => b.status !== "rejected");
  const lowest = predicted
    .filter((b) => b.status === "predicted")
    .reduce<number | null>((low, b) => Math.min(low ?? 1, b.confidence ?? 0), null);
  return (
    <figure className="review-figure">
      <div
        className="review-frame"
        style={{
          aspectRatio: `${item.width} / ${item.height}`,
          // As wide as fits, and no taller than the window: the boxes stay on the image.
          width: `min(100%, calc((100vh - 14rem) * ${item.width / Math.max(1, item.height)}))`,
        }}
      >
        <img src={`/api/images/${item.id}/file`} alt={item.filename} decoding="async" />
        <svg viewBox="0 0 1 1" preserveAspectRatio="none" aria-hidden="true">
          {predicted.map((b, i) => (
            <rect
              key={i}
              x={b.x}
              y={b.y}
              width={b.w}
              height={b.h}
              fill="none"
              stroke={colors[b.class_id] ?? "#ff9800"}
              strokeWidth={2}
              strokeDasharray={b.status === "predicted" ? "6 4" : undefined}
              vectorEffect="non-scaling-stroke"
            />
          ))}
        </svg>
      </div>
      <figcaption>
        <strong>{item.filename}</strong>{" "}
        {boxes.isPending
          ? "loading boxes…"
          : boxes.isError
            ? errorMessage(boxes.error)
            : `${predicted.length} predicted box${predicted.length === 1 ? "" : "es"}${
                lowest !== null ? `, lowest confidence ${lowest.toFixed(2)}` : ""
              }`}
        {predicted.length > 0 && (
          <ul className="chips" aria-label="Predictions, least confident first">
            {[...predicted]
              .sort((a, b) => (a.confidence ?? 0) - (b.confidence ?? 0))
              .slice(0, 24)
              .map((b, i) => (
                <li key={i} className="chip">
                  <span className="swatch" style={{ background: colors[b.class_id] }} aria-hidden="true" />
                  {classNames[b.class_id] ?? b.class_id}
                  {b.confidence !== null ? ` ${b.confidence.toFixed(2)}` : ""}
                </li>
              ))}
            {predicted.length > 24 && <li className="chip">+{predicted.length - 24} more</li>}
          </ul>
        )}
      </figcaption>
    </figure>
  );
}

export function ReviewPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const queue = useInfiniteQuery({ ...queueQuery(projectId), enabled: valid });
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const [index, setIndex] = useState(0);
  const [done, setDone] = useState<Record<number, Verdict>>({});
  useTitle(project.data ? `Review · ${project.data.name}` : "Review");

  const items = queue.data?.pages.flatMap((page) => page.items) ?? [];
  const current = items[index];
  const canReview = project.data ? project.data.role !== "viewer" : false;
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = queue;
  useEffect(() => {
    if (hasNextPage && !isFetchingNextPage && index >= items.length - 5) void fetchNextPage();
  }, [index, items.length, hasNextPage, isFetchingNextPage, fetchNextPage]);

  // The next image's file starts loading while this one is looked at.
  const next = items[index + 1];
  useEffect(() => {
    if (!next) return;
    const img = new window.Image();
    img.src = `/api/images/${next.id}/file`;
  }, [next]);

  const act = useMutation({
    mutationFn: ({ item, action }: { item: QueueItem; action: "accept_all" | "reject_all" }) =>
      reviewImage(item.id, action),
    onSuccess: (_, { item, action }) => {
      setDone((d) => ({ ...d, [item.id]: action === "accept_all" ? "accepted" : "rejected" }));
      void queryClient.invalidateQueries({ queryKey: keys.project(projectId), exact: true });
      void queryClient.invalidateQueries({ queryKey: boxesQuery(item.id).queryKey });
    },
  });

  const move = useCallback(
    (step: number) => setIndex((i) => Math.max(0, Math.min(items.length, i + step))),
    [items.length],
  );
  const decide = useCallback(
    (action: "accept_all" | "reject_all") => {
      if (!current || !canReview || act.isPending) return;
      act.mutate({ item: current, action }, { onSuccess: () => move(1) });
    },
    [act, canReview, current, move],
  );
  const open = useCallback(() => {
    if (current) void navigate(`/projects/${projectId}/images/${current.id}`);
  }, [current, navigate, projectId]);

  const handlers = useRef({ decide, open, move });
  handlers.current = { decide, open, move };
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const target = event.target as HTMLElement | null;
      if (target?.closest("input, textarea, select, button, a, dialog")) {
        if (event.key === "Enter") return; // a focused control's own Enter
      }
      const h = handlers.current;
      const key = event.key.toLowerCase();
      if (key === "a") h.decide("accept_all");
      else if (key === "x") h.decide("reject_all");
      else if (key === "e" || event.key === "Enter") h.open();
      else if (key === "j" || event.key === "ArrowRight") h.move(1);
      else if (key === "k" || event.key === "ArrowLeft") h.move(-1);
      else return;
      event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  if (!valid) return <ErrorMessage error={new ApiError(404, "There is no project at this address.")} title="Not found" />;
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (queue.isError) return <ErrorMessage error={queue.error} />;
  if (!project.data || queue.isPending) return <p className="page-status">Loading the review queue…</p>;

  const { name, class_colors: colors, classes } = project.data;
  const waiting = project.data.images.predicted;
  const verdict = current ? done[current.id] : undefined;

  return (
    <section className="page review">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{name}</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">Review</span>
      </nav>
      <div className="page-head">
        <h1>Review predictions</h1>
        <span className="badge">{waiting.toLocaleString()} waiting</span>
      </div>
      {items.length === 0 ? (
        <div className="empty">
          <h2>Nothing to review</h2>
          <p>No image of this project has predictions waiting for a person.</p>
          <Link to={`/projects/${projectId}`}>Back to the images</Link>
        </div>
      ) : !current ? (
        <div className="empty">
          <h2>End of the queue</h2>
          <p>You went through every predicted image that was waiting.</p>
          <div className="actions">
            <button type="button" onClick={() => move(-1)}>
              Back to the last one
            </button>
            <Link className="button" to={`/projects/${projectId}`}>
              Back to the images
            </Link>
          </div>
        </div>
      ) : (
        <div className="review-body">
          <Preview key={current.id} item={current} colors={colors} classNames={classes} />
          <aside className="review-side" aria-label="Review actions">
            <p aria-live="polite">
              Image {index + 1} of {items.length}
              {hasNextPage ? "+" : ""}
              {verdict ? ` · ${verdict}` : ""}
            </p>
            {canReview ? (
              <div className="stack">
                <button type="button" className="primary" disabled={act.isPending} onClick={() => decide("accept_all")}>
                  Accept and next <kbd>A</kbd>
                </button>
                <button type="button" onClick={open}>
                  Fix in editor <kbd>E</kbd>
                </button>
                <button type="button" disabled={act.isPending} onClick={() => decide("reject_all")}>
                  Reject all and next <kbd>X</kbd>
                </button>
              </div>
            ) : (
              <p className="readonly-note" role="note">
                Read-only: viewers can look through the queue, not review it.
              </p>
            )}
            <div className="row">
              <button type="button" onClick={() => move(-1)} disabled={index === 0}>
                Previous <kbd>K</kbd>
              </button>
              <button type="button" onClick={() => move(1)}>
                Skip <kbd>J</kbd>
              </button>
            </div>
            {act.isError && (
              <p role="alert" className="error">
                Could not review: {errorMessage(act.error)}
              </p>
            )}
            <ol className="queue-list" aria-label="Queue">
              {items.slice(Math.max(0, index - 2), index + 8).map((item) => (
                <li key={item.id} aria-current={item.id === current.id ? "true" : undefined}>
                  {item.filename}
                  {done[item.id] ? ` (${done[item.id]})` : ""}
                </li>
              ))}
            </ol>
          </aside>
        </div>
      )}
    </section>
  );
}

// Auto-label the project's images with a model (the promoted one unless another is
// chosen): a job in the GPU pool that writes predicted boxes, never touching reviewed
// images; when it ends, its counts and the way to the review queue.
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useEffect, useState } from "react";
import { Link } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { Dialog } from "../../components/Dialog";
import { LiveJob } from "./ModelParts";
import type { Job } from "../../lib/jobs";
import type { Model } from "./queries";

type Which = "unlabeled" | "predicted" | "all";

const WHICH: [Which, string][] = [
  ["unlabeled", "Unlabeled images"],
  ["predicted", "Predicted images (replace earlier predictions)"],
  ["all", "Both unlabeled and predicted images"],
];

interface AutolabelResult {
  images: number;
  boxes: number;
  skipped_reviewed_meanwhile: number;
  unreadable: number;
  dropped_classes: Record<string, number>;
}

function resultOf(job: Job): AutolabelResult | null {
  const r = job.result;
  return r && typeof r === "object" && typeof (r as { images?: unknown }).images === "number"
    ? (r as unknown as AutolabelResult)
    : null;
}

function Outcome({ job, projectId }: { job: Job; projectId: number }) {
  const queryClient = useQueryClient();
  const done = job.state === "succeeded";
  useEffect(() => {
    // The gallery's counts and the review queue now hold the new predictions.
    if (done) void queryClient.invalidateQueries({ queryKey: keys.project(projectId) });
  }, [done, projectId, queryClient]);
  const result = resultOf(job);
  if (!done || !result) return null;
  const dropped = Object.entries(result.dropped_classes);
  return (
    <div className="job-result" role="status">
      <p>
        Labeled {result.images.toLocaleString()} image{result.images === 1 ? "" : "s"} with{" "}
        {result.boxes.toLocaleString()} predicted box{result.boxes === 1 ? "" : "es"}.
        {result.skipped_reviewed_meanwhile > 0 &&
          ` ${result.skipped_reviewed_meanwhile} skipped: a person saved or reviewed them meanwhile.`}
        {result.unreadable > 0 && ` ${result.unreadable} could not be read.`}
      </p>
      {dropped.length > 0 && (
        <p className="muted">
          Boxes of classes the project does not have were dropped:{" "}
          {dropped.map(([name, n]) => `${name} (${n})`).join(", ")}.
        </p>
      )}
      <Link className="button primary" to={`/projects/${projectId}/review`}>
        Open the review queue
      </Link>
    </div>
  );
}

export function AutolabelDialog({
  projectId,
  models,
  initialModelId,
  open,
  onClose,
}: {
  projectId: number;
  models: readonly Model[];
  initialModelId: number | null;
  open: boolean;
  onClose: () => void;
}) {
  const ready = models.filter((m) => m.state === "ready");
  const [modelId, setModelId] = useState<number | null>(initialModelId);
  const [conf, setConf] = useState(0.25);
  const [iou, setIou] = useState(0.7);
  const [which, setWhich] = useState<Which>("unlabeled");
  useEffect(() => setModelId(initialModelId), [initialModelId]);
  const chosen = modelId ?? ready[0]?.id ?? null;
  const start = useMutation({
    mutationFn: async () =>
      unwrap(
        await api.POST("/api/projects/{project_id}/jobs/autolabel", {
          params: { path: { project_id: projectId } },
          body: { model_id: chosen, conf, iou, status: which },
        }),
      ),
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    start.mutate();
  };

  return (
    <Dialog open={open} onClose={onClose} title="Auto-label images">
      {start.data ? (
        <div className="stack">
          <LiveJob jobId={start.data.id} label="Auto-labeling progress">
            {(job) => <Outcome job={job} projectId={projectId} />}
          </LiveJob>
          <div className="actions">
            <button type="button" onClick={() => start.reset()}>
              New auto-labeling run
            </button>
          </div>
        </div>
      ) : (
        <form className="stack" onSubmit={submit}>
          <label className="field">
            Model
            <select value={chosen ?? ""} onChange={(e) => setModelId(Number(e.target.value))}>
              {ready.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name}
                  {m.promoted ? " (promoted)" : ""}
                </option>
              ))}
            </select>
          </label>
          <div className="field-row">
            <label className="field">
              Confidence threshold
              <input
                type="number"
                min={0}
                max={1}
                step="any"
                value={conf}
                required
                onChange={(e) => setConf(e.target.valueAsNumber)}
              />
            </label>
            <label className="field">
              IoU threshold (NMS)
              <input
                type="number"
                min={0}
                max={1}
                step="any"
                value={iou}
                required
                onChange={(e) => setIou(e.target.valueAsNumber)}
              />
            </label>
          </div>
          <fieldset className="radios">
            <legend>Which images</legend>
            {WHICH.map(([value, label]) => (
              <label key={value}>
                <input type="radio" name="autolabel-which" checked={which === value} onChange={() => setWhich(value)} />
                {label}
              </label>
            ))}
          </fieldset>
          <p className="muted small">Reviewed images are never changed.</p>
          {start.isError && (
            <p role="alert" className="error">
              Auto-labeling was refused: {errorMessage(start.error)}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="primary" disabled={chosen === null || start.isPending}>
              {start.isPending ? "Starting…" : "Start auto-labeling"}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

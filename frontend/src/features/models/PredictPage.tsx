// The predict playground: drop images, see a model's boxes on them. The images never
// leave the browser except for the request; they are drawn from their bytes on a canvas
// (createImageBitmap: no object URL, so the page's img-src 'self' policy stays as it
// is), the boxes in an SVG on top. The request asks once for every box above
// LOWEST_CONF; the threshold slider filters here, and the CSV holds what is shown.
import { useQuery } from "@tanstack/react-query";
import { type DragEvent, useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { boxesCsv } from "./csv";
import { classCounts, formatConfidence, LOWEST_CONF, type PredictedImage, visibleBoxes } from "./predictions";
import { type Model, modelsQuery, type Project, projectQuery } from "./queries";
import "./models.css";

// The server's default OCULAB_MAX_PREDICT_IMAGES: more files go in several requests.
const PER_REQUEST = 16;
const MAX_CANVAS_WIDTH = 1024;

interface Item {
  key: number;
  file: File;
  image?: PredictedImage;
  error?: string;
}

async function predict(model: Model, files: File[], iou: number): Promise<PredictedImage[]> {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const result = unwrap(
    await api.POST("/api/models/{model_id}/predict", {
      params: { path: { model_id: model.id }, query: { conf: LOWEST_CONF, iou } },
      body: form as unknown as { files?: string[] },
    }),
  );
  return result.images;
}

function colorFor(project: Project, classId: number | null): string {
  return (classId !== null ? project.class_colors[classId] : undefined) ?? "#ff9800";
}

/** The file's pixels on a canvas no wider than MAX_CANVAS_WIDTH. */
function Pixels({ file, label }: { file: File; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let gone = false;
    if (typeof createImageBitmap !== "function") {
      setFailed(true);
      return;
    }
    createImageBitmap(file)
      .then((bitmap) => {
        const target = canvas.current;
        if (gone || !target) return bitmap.close();
        const scale = Math.min(1, MAX_CANVAS_WIDTH / bitmap.width);
        target.width = Math.max(1, Math.round(bitmap.width * scale));
        target.height = Math.max(1, Math.round(bitmap.height * scale));
        target.getContext("2d")?.drawImage(bitmap, 0, 0, target.width, target.height);
        bitmap.close();
      })
      .catch(() => !gone && setFailed(true));
    return () => {
      gone = true;
    };
  }, [file]);
  if (failed) return <div className="predict-nopreview muted">This browser cannot show the image.</div>;
  return <canvas ref={canvas} role="img" aria-label={label} />;
}

function Figure({ item, threshold, project }: { item: Item; threshold: number; project: Project }) {
  const image = item.image;
  const boxes = image ? visibleBoxes(image, threshold) : [];
  const ratio = image ? `${image.width} / ${image.height}` : undefined;
  return (
    <figure className="predict-figure" aria-label={item.file.name}>
      <div className="predict-frame" style={ratio ? { aspectRatio: ratio } : undefined}>
        <Pixels file={item.file} label={item.file.name} />
        {image && (
          <>
            <svg viewBox="0 0 1 1" preserveAspectRatio="none" aria-hidden="true">
              {boxes.map((b, i) => (
                <rect
                  key={i}
                  className="pred-box"
                  x={b.x}
                  y={b.y}
                  width={b.w}
                  height={b.h}
                  fill="none"
                  stroke={colorFor(project, b.class_id)}
                  strokeWidth={2}
                  vectorEffect="non-scaling-stroke"
                />
              ))}
            </svg>
            {boxes.map((b, i) => (
              <span
                key={i}
                // Above the box, or inside it when the box touches the top edge.
                className={`pred-label${b.y < 0.06 ? " inside" : ""}`}
                style={{
                  left: `${b.x * 100}%`,
                  top: `${b.y * 100}%`,
                  backgroundColor: colorFor(project, b.class_id),
                }}
              >
                {b.class_name} {formatConfidence(b.confidence)}
              </span>
            ))}
          </>
        )}
      </div>
      <figcaption>
        <strong>{item.file.name}</strong>{" "}
        {item.error ? (
          <span className="error">{item.error}</span>
        ) : image ? (
          <span className="box-count">
            {boxes.length} box{boxes.length === 1 ? "" : "es"}
          </span>
        ) : (
          <span className="muted">predicting…</span>
        )}
        {image && (
          <span className="muted">
            {" "}
            · {image.width}×{image.height}
          </span>
        )}
      </figcaption>
    </figure>
  );
}

function download(text: string, filename: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function PredictPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const [params, setParams] = useSearchParams();
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const models = useQuery({ ...modelsQuery(projectId), enabled: valid });
  const [items, setItems] = useState<Item[]>([]);
  const [threshold, setThreshold] = useState(0.25);
  const [iou, setIou] = useState(0.7);
  const [running, setRunning] = useState(false);
  const [dragging, setDragging] = useState(false);
  const run = useRef(0);
  useTitle(project.data ? `Predict · ${project.data.name}` : "Predict");

  const ready = useMemo(() => (models.data ?? []).filter((m) => m.state === "ready"), [models.data]);
  const asked = Number(params.get("model"));
  const model =
    ready.find((m) => m.id === asked) ?? ready.find((m) => m.promoted) ?? ready[0] ?? null;

  // A file dropped beside the drop zone must not make the browser open it instead.
  useEffect(() => {
    const guard = (event: globalThis.DragEvent) => {
      if (!Array.from(event.dataTransfer?.types ?? []).includes("Files") || event.defaultPrevented) return;
      event.preventDefault();
    };
    window.addEventListener("dragover", guard);
    window.addEventListener("drop", guard);
    return () => {
      window.removeEventListener("dragover", guard);
      window.removeEventListener("drop", guard);
    };
  }, []);

  const start = async (chosen: File[]) => {
    if (!model || chosen.length === 0) return;
    const id = ++run.current;
    const batch: Item[] = chosen.map((file, key) => ({ key, file }));
    setItems(batch);
    setRunning(true);
    for (let at = 0; at < batch.length; at += PER_REQUEST) {
      const slice = batch.slice(at, at + PER_REQUEST);
      let update: (item: Item, index: number) => Item;
      try {
        const images = await predict(
          model,
          slice.map((item) => item.file),
          iou,
        );
        update = (item, index) => ({ ...item, image: images[index] });
      } catch (error) {
        const message = errorMessage(error);
        update = (item) => ({ ...item, error: message });
      }
      if (run.current !== id) return; // a newer batch replaced this one
      setItems((current) => current.map((item) => (item.key >= at && item.key < at + slice.length ? update(item, item.key - at) : item)));
    }
    setRunning(false);
  };

  if (!valid) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (models.isError) return <ErrorMessage error={models.error} />;
  if (!project.data || !models.data) return <p className="page-status">Loading…</p>;

  const done = items.filter((item): item is Item & { image: PredictedImage } => item.image !== undefined);
  const counts = classCounts(
    done.map((item) => item.image),
    threshold,
  );
  const shown = counts.reduce((n, [, c]) => n + c, 0);
  const csv = () =>
    boxesCsv(
      done.map((item) => ({
        file: item.file.name,
        width: item.image.width,
        height: item.image.height,
        boxes: visibleBoxes(item.image, threshold).map((b) => ({ ...b, className: b.class_name })),
      })),
    );

  const dropHandlers = model
    ? {
        onDragOver: (e: DragEvent) => {
          e.preventDefault();
          e.dataTransfer.dropEffect = "copy";
          setDragging(true);
        },
        onDragLeave: () => setDragging(false),
        onDrop: (e: DragEvent) => {
          e.preventDefault();
          setDragging(false);
          void start(Array.from(e.dataTransfer.files).filter((f) => f.type.startsWith("image/") || f.type === ""));
        },
      }
    : {};

  return (
    <section className="page predict-page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data.name}</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}/models`}>Models</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">Predict</span>
      </nav>
      <div className="page-head">
        <h1>Predict playground</h1>
      </div>
      {ready.length === 0 ? (
        <div className="empty">
          <p>No ready model in this project yet.</p>
          <p>
            <Link to={`/projects/${projectId}/models`}>Upload or train one</Link> first.
          </p>
        </div>
      ) : (
        <>
          <div className="toolbar predict-controls">
            <label className="inline-field">
              <span>Model</span>
              <select
                value={model?.id ?? ""}
                onChange={(e) => setParams({ model: e.target.value }, { replace: true })}
              >
                {ready.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.name}
                    {m.promoted ? " (promoted)" : ""}
                  </option>
                ))}
              </select>
            </label>
            <label className="inline-field">
              <span>IoU (NMS)</span>
              <input
                type="number"
                min={0}
                max={1}
                step={0.05}
                value={iou}
                onChange={(e) => setIou(Number.isFinite(e.target.valueAsNumber) ? e.target.valueAsNumber : 0.7)}
              />
            </label>
            <label className="button file-button primary">
              <input
                type="file"
                multiple
                accept="image/*"
                className="visually-hidden"
                disabled={running}
                onChange={(e) => {
                  void start(Array.from(e.target.files ?? []));
                  e.target.value = "";
                }}
              />
              Choose images
            </label>
          </div>
          <div className={`predict-drop${dragging ? " dragging" : ""}`} {...dropHandlers}>
            Drop one image or many here ({PER_REQUEST} per request; they are not added to the project).
          </div>
          {items.length > 0 && (
            <div className="predict-summary">
              <label className="field threshold">
                <span>
                  Confidence threshold <span className="threshold-value">{threshold.toFixed(2)}</span>
                </span>
                <input
                  type="range"
                  min={0}
                  max={1}
                  step={0.01}
                  value={threshold}
                  onChange={(e) => setThreshold(e.target.valueAsNumber)}
                />
              </label>
              <div aria-live="polite" className="predict-status">
                {running
                  ? `Predicting ${done.length} of ${items.length} images done…`
                  : `${shown} box${shown === 1 ? "" : "es"} on ${done.length} image${done.length === 1 ? "" : "s"}`}
              </div>
              <table className="class-counts">
                <caption className="visually-hidden">Boxes per class</caption>
                <thead>
                  <tr>
                    <th scope="col">Class</th>
                    <th scope="col">Boxes</th>
                  </tr>
                </thead>
                <tbody>
                  {counts.map(([name, n]) => (
                    <tr key={name}>
                      <th scope="row">{name}</th>
                      <td>{n}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <button
                type="button"
                disabled={running || done.length === 0}
                onClick={() => download(csv(), `predictions-${model?.name ?? "model"}.csv`)}
              >
                Download CSV
              </button>
            </div>
          )}
          <div className="predict-results">
            {items.map((item) => (
              <Figure key={item.key} item={item} threshold={threshold} project={project.data} />
            ))}
          </div>
        </>
      )}
    </section>
  );
}

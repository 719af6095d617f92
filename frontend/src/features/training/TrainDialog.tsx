// The Train dialog: what the run will learn from (the server's own selection and split,
// GET /training-data), its parameters, and POST /jobs/train.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useDeferredValue, useId, useState } from "react";
import { useNavigate } from "react-router";
import { errorMessage } from "../../api/errors";
import { Dialog } from "../../components/Dialog";
import { modelsQuery, runsQuery, startTraining, type TrainingData, trainingDataQuery, type TrainRequest } from "./api";

interface Props {
  projectId: number;
  open: boolean;
  onClose: () => void;
}

interface Form {
  base: string;
  epochs: string;
  imgsz: string;
  batch: string;
  valFraction: string;
  pool: string;
  name: string;
  deterministic: boolean;
}

type TextField = Exclude<keyof Form, "deterministic">;

const INITIAL: Form = {
  base: "",
  epochs: "50",
  imgsz: "640",
  batch: "16",
  valFraction: "0.2",
  pool: "",
  name: "",
  deterministic: true,
};

function validFraction(text: string): number | null {
  const value = Number(text);
  return text.trim() !== "" && Number.isFinite(value) && value >= 0 && value <= 0.9 ? value : null;
}

function integer(text: string): number | null {
  return /^-?\d+$/.test(text.trim()) ? Number(text) : null;
}

/** The request, or what is wrong with the form (the server checks the same again). */
export function parseForm(form: Form, data: TrainingData): TrainRequest | string {
  const epochs = integer(form.epochs);
  if (epochs === null || epochs < 1 || epochs > 1000) return "Epochs must be a whole number from 1 to 1000.";
  const imgsz = integer(form.imgsz);
  if (imgsz === null || imgsz < 32 || imgsz > 2048 || imgsz % 32 !== 0) {
    return "Image size must be a multiple of 32 from 32 to 2048.";
  }
  const batch = integer(form.batch);
  if (batch === null || batch === 0 || batch < -1 || batch > 512) return "Batch must be -1 (auto) or from 1 to 512.";
  const val = validFraction(form.valFraction);
  if (val === null) return "The validation fraction must be from 0 to 0.9.";
  const base = form.base || data.architectures[0] || "yolo11n.yaml";
  const body: TrainRequest = {
    base: /^\d+$/.test(base) ? Number(base) : base,
    epochs,
    imgsz,
    batch,
    val_fraction: val,
    seed: data.seed,
    deterministic: form.deterministic,
    pool: form.pool || data.default_pool,
  };
  if (form.name.trim()) body.name = form.name.trim();
  return body;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

function DataSummary({ data, pending }: { data: TrainingData; pending: boolean }) {
  return (
    <section className="train-data" aria-labelledby="train-data-title" aria-busy={pending}>
      <h3 id="train-data-title">What it will learn from</h3>
      {data.problem ? (
        <p role="alert" className="error">
          Cannot train: {data.problem}.
        </p>
      ) : (
        <p>
          {plural(data.images, `${data.only_reviewed ? "reviewed " : ""}image`)}: {data.train_images.toLocaleString()} for
          training, {data.val_images.toLocaleString()} for validation
          {data.val_images === 0 && " (none: it validates on the training images)"}; {plural(data.boxes, "box", "boxes")}.
        </p>
      )}
      {!data.problem && data.boxes === 0 && (
        <p className="error">No accepted boxes: every image is a negative example, and the model will find nothing.</p>
      )}
      <table className="table compact">
        <caption className="visually-hidden">Boxes per class</caption>
        <thead>
          <tr>
            <th scope="col">Class</th>
            <th scope="col" className="num">
              Boxes
            </th>
            <th scope="col" className="num">
              Images
            </th>
          </tr>
        </thead>
        <tbody>
          {data.classes.map((c) => (
            <tr key={c.class_id} className={c.boxes === 0 ? "muted" : undefined}>
              <th scope="row">{c.name}</th>
              <td className="num">{c.boxes.toLocaleString()}</td>
              <td className="num">{c.images.toLocaleString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function TrainDialog({ projectId, open, onClose }: Props) {
  const [form, setForm] = useState<Form>(INITIAL);
  const [invalid, setInvalid] = useState<string | null>(null);
  const ids = { help: useId() };
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  // The preview follows the validation fraction as it is typed, once it is valid.
  const fraction = useDeferredValue(validFraction(form.valFraction));
  const data = useQuery({
    ...trainingDataQuery(projectId, { val_fraction: fraction ?? 0.2, seed: 0 }),
    enabled: open && fraction !== null,
    placeholderData: (previous) => previous,
  });
  const models = useQuery({ ...modelsQuery(projectId), enabled: open });
  const ready = (models.data ?? []).filter((m) => m.state === "ready");
  const start = useMutation({
    mutationFn: (body: TrainRequest) => startTraining(projectId, body),
    onSuccess: (job) => {
      void queryClient.invalidateQueries({ queryKey: runsQuery(projectId).queryKey });
      onClose();
      void navigate(`/projects/${projectId}/training/${job.id}`);
    },
  });

  const set = (field: TextField) => (event: { target: { value: string } }) => {
    setInvalid(null);
    setForm((f) => ({ ...f, [field]: event.target.value }));
  };

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!data.data || data.data.problem) return;
    const parsed = parseForm(form, data.data);
    if (typeof parsed === "string") setInvalid(parsed);
    else start.mutate(parsed);
  };

  const pools = data.data?.pools ?? [];
  const pool = pools.find((p) => p.name === (form.pool || data.data?.default_pool));
  const refused = !data.data || Boolean(data.data.problem);

  return (
    <Dialog open={open} onClose={onClose} title="Train a model" className="train-dialog">
      {data.isPending && open && <p className="muted">Counting the reviewed images…</p>}
      {data.isError && (
        <p role="alert" className="error">
          Cannot count the training data: {errorMessage(data.error)}
        </p>
      )}
      {data.data && <DataSummary data={data.data} pending={data.isFetching} />}
      <form onSubmit={submit} className="stack train-form" noValidate>
        <div className="train-grid">
          <label className="field">
            <span>Start from</span>
            <select value={form.base} onChange={set("base")}>
              <optgroup label="Architecture (random weights)">
                {(data.data?.architectures ?? ["yolo11n.yaml"]).map((a, i) => (
                  <option key={a} value={i === 0 ? "" : a}>
                    {a}
                  </option>
                ))}
              </optgroup>
              {ready.length > 0 && (
                <optgroup label="A model of this project (fine-tune)">
                  {ready.map((m) => (
                    <option key={m.id} value={String(m.id)}>
                      {m.name} (#{m.id})
                    </option>
                  ))}
                </optgroup>
              )}
            </select>
          </label>
          <label className="field">
            <span>Epochs</span>
            <input type="number" inputMode="numeric" min={1} max={1000} value={form.epochs} onChange={set("epochs")} />
          </label>
          <label className="field">
            <span>Image size (px)</span>
            <input
              type="number"
              inputMode="numeric"
              min={32}
              max={2048}
              step={32}
              value={form.imgsz}
              onChange={set("imgsz")}
            />
          </label>
          <label className="field">
            <span>Batch</span>
            <input
              type="number"
              inputMode="numeric"
              min={-1}
              max={512}
              value={form.batch}
              onChange={set("batch")}
              aria-describedby={ids.help}
            />
          </label>
          <label className="field">
            <span>Validation fraction</span>
            <input
              type="number"
              inputMode="decimal"
              min={0}
              max={0.9}
              step={0.05}
              value={form.valFraction}
              onChange={set("valFraction")}
            />
          </label>
          <label className="field">
            <span>Pool</span>
            <select value={form.pool || data.data?.default_pool || ""} onChange={set("pool")}>
              {pools.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name} ({p.gpu ? "GPU" : "CPU"}, {plural(p.slots, "worker slot")})
                </option>
              ))}
            </select>
          </label>
          <label className="field wide">
            <span>Model name (optional)</span>
            <input type="text" maxLength={200} value={form.name} onChange={set("name")} placeholder="train-<job id>" />
          </label>
        </div>
        <label className="check">
          <input
            type="checkbox"
            checked={form.deterministic}
            onChange={(event) => {
              const deterministic = event.target.checked;
              setForm((f) => ({ ...f, deterministic }));
            }}
          />
          Deterministic: the same data and seed train the same model (slower on a GPU)
        </label>
        <p id={ids.help} className="muted small">
          Batch -1 picks the largest batch that fits the GPU. A validation fraction of 0 keeps each image's own split.
        </p>
        {pool && pool.slots === 0 && (
          <p className="error">
            No worker serves the {pool.name} pool right now: the run will wait in the queue until one does.
          </p>
        )}
        {invalid && (
          <p role="alert" className="error">
            {invalid}
          </p>
        )}
        {start.isError && (
          <p role="alert" className="error">
            The server refused the run: {errorMessage(start.error)}
          </p>
        )}
        <div className="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={refused || start.isPending}>
            {start.isPending ? "Starting…" : "Start training"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

// What a finished job produced, by kind: import counts and issues, the export's zip,
// the model a training registered, an inspection's verdict, auto-label counts.
// Results are free JSON objects in the API; each reader checks the shape it needs.
import { Link } from "react-router";
import { ImportResult } from "../images/ImportDialog";
import { formatBytes } from "../../lib/format";
import { exportReport, importReport } from "../images/job";
import type { Job } from "./format";

type Dict = Record<string, unknown>;

const isDict = (value: unknown): value is Dict => typeof value === "object" && value !== null && !Array.isArray(value);
const num = (value: unknown): number | null => (typeof value === "number" && Number.isFinite(value) ? value : null);

/** The model a job is about: the one it registered (result) or inspected (params). */
export function modelIdOf(job: Pick<Job, "result" | "params">): number | null {
  return num(isDict(job.result) ? job.result.model_id : undefined) ?? num(job.params.model_id);
}

function Counts({ label, entries }: { label: string; entries: Array<[string, number | null]> }) {
  const shown = entries.filter((e): e is [string, number] => e[1] !== null);
  if (shown.length === 0) return null;
  return (
    <dl className="result-counts" aria-label={label}>
      {shown.map(([name, value]) => (
        <div key={name}>
          <dt>{name}</dt>
          <dd>{value.toLocaleString()}</dd>
        </div>
      ))}
    </dl>
  );
}

function ExportResult({ job }: { job: Job }) {
  const report = exportReport(job);
  return (
    <>
      {report && (
        <p>
          {report.images.toLocaleString()} image{report.images === 1 ? "" : "s"} and {report.boxes.toLocaleString()} box
          {report.boxes === 1 ? "" : "es"} in {report.format.toUpperCase()}
          {Object.keys(report.splits).length > 0 &&
            ` (${Object.entries(report.splits)
              .map(([split, n]) => `${split}: ${n.toLocaleString()}`)
              .join(", ")})`}
          .
        </p>
      )}
      {report && report.missing_files.length > 0 && (
        <p className="error">{report.missing_files.length} image files were missing from storage and left out.</p>
      )}
      {job.has_artifact ? (
        <a className="button primary" href={`/api/jobs/${job.id}/artifact`} download>
          Download the zip{report ? ` (${formatBytes(report.zip_bytes)})` : ""}
        </a>
      ) : (
        <p className="muted">The zip is no longer available.</p>
      )}
    </>
  );
}

function TrainingResult({ job }: { job: Job }) {
  const result = isDict(job.result) ? job.result : {};
  const metrics = isDict(result.metrics) ? result.metrics : {};
  const modelId = modelIdOf(job);
  return (
    <>
      <Counts
        label="Final metrics"
        entries={["precision", "recall", "mAP50", "mAP50-95"].map((k) => [k, num(metrics[k])])}
      />
      {modelId !== null && job.project_id !== null && (
        <p>
          Registered as <Link to={`/projects/${job.project_id}/models/${modelId}`}>model {modelId}</Link>.
        </p>
      )}
    </>
  );
}

function AutolabelResult({ job }: { job: Job }) {
  const result = isDict(job.result) ? job.result : {};
  const dropped = isDict(result.dropped_classes) ? Object.entries(result.dropped_classes) : [];
  return (
    <>
      <Counts
        label="Auto-label counts"
        entries={[
          ["Images labelled", num(result.images)],
          ["Boxes predicted", num(result.boxes)],
          ["Skipped (reviewed meanwhile)", num(result.skipped_reviewed_meanwhile)],
          ["Unreadable images", num(result.unreadable)],
        ]}
      />
      {dropped.length > 0 && (
        <p>
          Boxes of classes the project does not have were dropped:{" "}
          {dropped.map(([name, n]) => `${name} (${String(n)})`).join(", ")}
        </p>
      )}
      {job.project_id !== null && (
        <p>
          <Link to={`/projects/${job.project_id}/review`}>Review the predictions</Link>
        </p>
      )}
    </>
  );
}

function InspectResult({ job }: { job: Job }) {
  const result = isDict(job.result) ? job.result : {};
  const classes = num(result.classes);
  const task = typeof result.task === "string" ? result.task : null;
  return (
    <p>
      The weights load as a {task ?? "YOLO"} model
      {classes !== null ? ` with ${classes.toLocaleString()} class${classes === 1 ? "" : "es"}` : ""}.
    </p>
  );
}

/** Scalars of an unknown kind's result, as plain text. */
function GenericResult({ job }: { job: Job }) {
  const entries = isDict(job.result)
    ? Object.entries(job.result).filter(([, v]) => ["string", "number", "boolean"].includes(typeof v))
    : [];
  if (entries.length === 0) return <p className="muted">This job reported no result.</p>;
  return (
    <dl className="result-list">
      {entries.map(([key, value]) => (
        <div key={key}>
          <dt>{key}</dt>
          <dd>{String(value)}</dd>
        </div>
      ))}
    </dl>
  );
}

function Succeeded({ job }: { job: Job }) {
  switch (job.kind) {
    case "datasets.import": {
      const report = importReport(job);
      return report ? <ImportResult report={report} /> : <GenericResult job={job} />;
    }
    case "datasets.export":
      return <ExportResult job={job} />;
    case "training.train":
      return <TrainingResult job={job} />;
    case "autolabel.run":
      return <AutolabelResult job={job} />;
    case "models.inspect":
      return <InspectResult job={job} />;
    default:
      return <GenericResult job={job} />;
  }
}

/** The job's outcome: its result once it succeeded, the error once it failed. */
export function JobResult({ job }: { job: Job }) {
  const modelId = modelIdOf(job);
  const modelLink =
    modelId !== null && job.project_id !== null && (job.kind === "models.inspect" || job.kind === "autolabel.run") ? (
      <p>
        {job.kind === "models.inspect" ? "The uploaded model: " : "With "}
        <Link to={`/projects/${job.project_id}/models/${modelId}`}>model {modelId}</Link>
      </p>
    ) : null;
  const runLink =
    job.kind === "training.train" && job.project_id !== null ? (
      <p>
        <Link to={`/projects/${job.project_id}/training/${job.id}`}>Open the training run (curves)</Link>
      </p>
    ) : null;

  if (job.state === "failed") {
    return (
      <section aria-labelledby="job-outcome" className="card job-outcome">
        <h2 id="job-outcome">{job.kind === "models.inspect" ? "Refused" : "Failed"}</h2>
        <p role="alert" className="error job-error">
          {job.error ?? job.message ?? "The job failed without saying why."}
        </p>
        {modelLink}
        {runLink}
      </section>
    );
  }
  if (job.state === "canceled") {
    return (
      <section aria-labelledby="job-outcome" className="card job-outcome">
        <h2 id="job-outcome">Canceled</h2>
        <p>{job.message || "The job was canceled."}</p>
        {runLink}
      </section>
    );
  }
  if (job.state !== "succeeded") return runLink ? <div className="job-outcome">{runLink}</div> : null;
  return (
    <section aria-labelledby="job-outcome" className="card job-outcome job-result">
      <h2 id="job-outcome">Result</h2>
      <Succeeded job={job} />
      {modelLink}
      {runLink}
    </section>
  );
}

// One model: what it detects, how it was made and how well it scored, with the same
// actions as the registry (download, promote, auto-label, try it in the playground).
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useParams } from "react-router";
import { ApiError } from "../../api/errors";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canAutolabel } from "../../lib/permissions";
import { AutolabelDialog } from "./AutolabelDialog";
import { Lineage, Metrics, ModelActions, PromotedBadge, StateBadge } from "./ModelParts";
import { formatBytes } from "../../lib/format";
import { modelQuery, modelsQuery, projectQuery } from "./queries";
import "./models.css";

function Row({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <div>
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

export function ModelPage() {
  const params = useParams();
  const projectId = Number(params.projectId);
  const modelId = Number(params.modelId);
  const valid = [projectId, modelId].every((n) => Number.isSafeInteger(n) && n > 0);
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const model = useQuery({ ...modelQuery(modelId), enabled: valid });
  const models = useQuery({ ...modelsQuery(projectId), enabled: valid });
  const [autolabel, setAutolabel] = useState(false);
  useTitle(model.data?.name ?? "Model");

  const wrongProject = model.data !== undefined && model.data.project_id !== projectId;
  if (!valid || wrongProject) {
    return <ErrorMessage error={new ApiError(404, "There is no such model in this project.")} />;
  }
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (model.isError) return <ErrorMessage error={model.error} />;
  if (!project.data || !model.data) return <p className="page-status">Loading model…</p>;

  const m = model.data;
  const { role } = project.data;
  const promoted = models.data?.find((x) => x.promoted) ?? null;
  const hyperparams = Object.entries(m.hyperparams);

  return (
    <section className="page model-page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data.name}</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}/models`}>Models</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">{m.name}</span>
      </nav>
      <div className="page-head">
        <h1>{m.name}</h1>
        <StateBadge model={m} />
        {m.promoted && <PromotedBadge />}
      </div>
      {m.state === "failed" && (
        <p role="alert" className="error-panel">
          Refused: {m.error ?? "the weights could not be inspected"}
        </p>
      )}
      {m.state === "pending" && <p className="muted">A worker is inspecting the weights…</p>}
      <div className="toolbar" role="toolbar" aria-label="Model actions">
        <ModelActions model={m} role={role} current={promoted} />
        {m.state === "ready" && canAutolabel(role) && (
          <button type="button" onClick={() => setAutolabel(true)}>
            Auto-label with this model
          </button>
        )}
        {m.state === "ready" && (
          <Link className="button" to={`/projects/${projectId}/predict?model=${m.id}`}>
            Try it in the playground
          </Link>
        )}
      </div>
      <div className="model-details">
        <section className="card">
          <h2>What it detects</h2>
          {m.class_names.length > 0 ? (
            <ol className="chips model-classes" aria-label="Classes">
              {m.class_names.map((name, i) => (
                <li key={i} className="chip">
                  <span className="muted">{i}</span> {name}
                </li>
              ))}
            </ol>
          ) : (
            <p className="muted">Not known yet.</p>
          )}
          <dl className="facts">
            <Row label="Task">{m.task ?? "—"}</Row>
            <Row label="Architecture">{m.architecture ?? "—"}</Row>
            <Row label="Image size">{m.imgsz ? `${m.imgsz} px` : "—"}</Row>
            <Row label="Parameters">{m.parameters ? m.parameters.toLocaleString() : "—"}</Row>
          </dl>
        </section>
        <section className="card">
          <h2>Validation metrics</h2>
          <Metrics model={m} explain />
        </section>
        <section className="card">
          <h2>Lineage</h2>
          <dl className="facts">
            <Row label="Source">{m.source === "training" ? "Trained here" : "Uploaded"}</Row>
            <Row label="Made from">
              <Lineage model={m} />
            </Row>
            {m.dataset_snapshot && (
              <Row label="Dataset snapshot">
                <code className="hash">{m.dataset_snapshot}</code>
              </Row>
            )}
            <Row label="Created">{new Date(m.created_at).toLocaleString()}</Row>
          </dl>
          {hyperparams.length > 0 && (
            <>
              <h3>Training parameters</h3>
              <dl className="facts">
                {hyperparams.map(([key, value]) => (
                  <Row key={key} label={key}>
                    {typeof value === "string" ? value : JSON.stringify(value)}
                  </Row>
                ))}
              </dl>
            </>
          )}
        </section>
        <section className="card">
          <h2>File</h2>
          <dl className="facts">
            <Row label="Name">
              <code>{m.filename}</code>
            </Row>
            <Row label="Size">{formatBytes(m.size_bytes)}</Row>
            <Row label="SHA-256">
              <code className="hash">{m.sha256}</code>
            </Row>
          </dl>
        </section>
      </div>
      {m.state === "ready" && canAutolabel(role) && models.data && (
        <AutolabelDialog
          projectId={projectId}
          models={models.data}
          initialModelId={m.id}
          open={autolabel}
          onClose={() => setAutolabel(false)}
        />
      )}
    </section>
  );
}

// A project's model registry: every model with where it came from, how well it scored
// and whether it is ready; owners upload weights and promote, annotators auto-label.
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useParams } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canAutolabel, canManageModels } from "../../lib/permissions";
import { AutolabelDialog } from "./AutolabelDialog";
import { Lineage, Metrics, ModelActions, PromotedBadge, StateBadge } from "./ModelParts";
import { modelsQuery, projectQuery } from "./queries";
import { UploadDialog } from "./UploadDialog";
import "./models.css";

export function ModelsPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const models = useQuery({ ...modelsQuery(projectId), enabled: valid });
  const [dialog, setDialog] = useState<"upload" | "autolabel" | null>(null);
  useTitle(project.data ? `Models · ${project.data.name}` : "Models");

  if (!valid) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (models.isError) return <ErrorMessage error={models.error} />;
  if (!project.data || !models.data) return <p className="page-status">Loading models…</p>;

  const { role } = project.data;
  const list = models.data;
  const promoted = list.find((m) => m.promoted) ?? null;
  const anyReady = list.some((m) => m.state === "ready");

  return (
    <section className="page models-page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data.name}</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">Models</span>
      </nav>
      <div className="page-head">
        <h1>Models</h1>
      </div>
      <div className="toolbar" role="toolbar" aria-label="Model actions">
        {canManageModels(role) && (
          <button type="button" className="primary" onClick={() => setDialog("upload")}>
            Upload weights
          </button>
        )}
        {canAutolabel(role) && anyReady && (
          <button type="button" onClick={() => setDialog("autolabel")}>
            Auto-label
          </button>
        )}
        {anyReady && (
          <Link className="button" to={`/projects/${projectId}/predict`}>
            Predict playground
          </Link>
        )}
        <Link className="button" to={`/projects/${projectId}/training`}>
          Training runs
        </Link>
      </div>
      {list.length === 0 ? (
        <div className="empty">
          <p>No models in this project yet.</p>
          <p>
            {canManageModels(role)
              ? "Upload YOLO weights, or train a model on the reviewed images."
              : "An owner can upload weights; anyone who may train can train one."}
          </p>
        </div>
      ) : (
        <table className="models">
          <caption className="visually-hidden">Models of {project.data.name}</caption>
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">Source</th>
              <th scope="col">Lineage</th>
              <th scope="col">Metrics</th>
              <th scope="col">State</th>
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((model) => (
              <tr key={model.id}>
                <th scope="row">
                  <Link to={`/projects/${projectId}/models/${model.id}`}>{model.name}</Link>{" "}
                  {model.promoted && <PromotedBadge />}
                  <div className="muted small">
                    {model.class_names.length > 0
                      ? `${model.class_names.length} class${model.class_names.length === 1 ? "" : "es"}`
                      : ""}
                    {model.architecture ? ` · ${model.architecture}` : ""}
                  </div>
                </th>
                <td>{model.source === "training" ? "Training" : "Upload"}</td>
                <td>
                  <Lineage model={model} />
                </td>
                <td>
                  <Metrics model={model} />
                </td>
                <td>
                  <StateBadge model={model} />
                  {model.state === "failed" && model.error && <div className="error small">{model.error}</div>}
                </td>
                <td>
                  <ModelActions model={model} role={role} current={promoted} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canManageModels(role) && (
        <UploadDialog projectId={projectId} open={dialog === "upload"} onClose={() => setDialog(null)} />
      )}
      {canAutolabel(role) && anyReady && (
        <AutolabelDialog
          projectId={projectId}
          models={list}
          initialModelId={promoted?.id ?? null}
          open={dialog === "autolabel"}
          onClose={() => setDialog(null)}
        />
      )}
    </section>
  );
}

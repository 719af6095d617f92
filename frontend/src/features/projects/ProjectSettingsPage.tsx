import { useQuery } from "@tanstack/react-query";
import { Link, useParams } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canEditProject } from "../../lib/permissions";
import { DeleteProject } from "./DeleteProject";
import { MembersSection } from "./MembersSection";
import { ProjectForm } from "./ProjectForm";
import { meQuery, type Project, projectQuery } from "./queries";

function ReadOnlyDetails({ project }: { project: Project }) {
  return (
    <section aria-labelledby="details-heading" className="stack">
      <h2 id="details-heading">Project</h2>
      {project.description && <p className="description">{project.description}</p>}
      <ol className="chips" aria-label="Classes">
        {project.classes.map((name, i) => (
          <li key={name} className="chip">
            <span className="swatch" aria-hidden="true" style={{ backgroundColor: project.class_colors[i] }} />
            {i}: {name}
          </li>
        ))}
      </ol>
      <p className="muted">Only the project’s owners can change its settings and members.</p>
    </section>
  );
}

export function ProjectSettingsPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const me = useQuery(meQuery);
  const owner = canEditProject(project.data?.role);
  useTitle(project.data ? `${owner ? "Settings" : "Members"} · ${project.data.name}` : "Project settings");

  if (!valid) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  if (project.isPending || me.isPending) return <p className="page-status">Loading project…</p>;
  if (project.isError) return <ErrorMessage error={project.error} />;
  if (me.isError) return <ErrorMessage error={me.error} />;

  return (
    <section className="page narrow settings">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data.name}</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">{owner ? "Settings" : "Members"}</span>
      </nav>
      <h1>{owner ? "Project settings" : project.data.name}</h1>
      {owner ? (
        <ProjectForm project={project.data} />
      ) : (
        <ReadOnlyDetails project={project.data} />
      )}
      <MembersSection project={project.data} me={me.data.id} />
      {owner && <DeleteProject project={project.data} />}
    </section>
  );
}

import { useInfiniteQuery } from "@tanstack/react-query";
import { Link } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { type ProjectSummary, projectsQuery } from "./queries";

function plural(n: number, word: string): string {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

function ImageCounts({ counts }: { counts: ProjectSummary["images"] }) {
  if (counts.total === 0) return <p className="muted">No images yet</p>;
  return (
    <dl className="counts">
      <div>
        <dt>Images</dt>
        <dd>{counts.total.toLocaleString()}</dd>
      </div>
      <div>
        <dt>Unlabeled</dt>
        <dd>{counts.unlabeled.toLocaleString()}</dd>
      </div>
      <div>
        <dt>Predicted</dt>
        <dd>{counts.predicted.toLocaleString()}</dd>
      </div>
      <div>
        <dt>Reviewed</dt>
        <dd>{counts.reviewed.toLocaleString()}</dd>
      </div>
    </dl>
  );
}

function ProjectCard({ project }: { project: ProjectSummary }) {
  const shown = project.classes.slice(0, 12);
  return (
    <li className="card project-card">
      <div className="card-head">
        <h2>
          <Link to={`/projects/${project.id}`}>{project.name}</Link>
        </h2>
        <span className="badge" title="Your role in this project">
          {project.role}
        </span>
      </div>
      {project.description && <p className="description">{project.description}</p>}
      <ImageCounts counts={project.images} />
      {project.classes.length > 0 && (
        <ul className="chips" aria-label={`Classes of ${project.name}`}>
          {shown.map((name, i) => (
            <li key={name} className="chip">
              <span
                className="swatch"
                aria-hidden="true"
                style={{ backgroundColor: project.class_colors[i] }}
              />
              {name}
            </li>
          ))}
          {project.classes.length > shown.length && (
            <li className="chip muted">+{project.classes.length - shown.length} more</li>
          )}
        </ul>
      )}
    </li>
  );
}

export function ProjectsPage() {
  useTitle("Projects");
  const query = useInfiniteQuery(projectsQuery);
  const projects = query.data?.pages.flatMap((page) => page.items) ?? [];

  return (
    <section className="page">
      <div className="page-head">
        <h1>Projects</h1>
        <Link className="button primary" to="/projects/new">
          New project
        </Link>
      </div>
      {query.isPending && <p className="page-status">Loading projects…</p>}
      {query.isError && <ErrorMessage error={query.error} />}
      {query.isSuccess && projects.length === 0 && (
        <div className="empty">
          <h2>No projects yet</h2>
          <p>A project holds a dataset, its classes and the people who label it.</p>
          <Link className="button primary" to="/projects/new">
            Create your first project
          </Link>
        </div>
      )}
      {projects.length > 0 && (
        <>
          <p className="muted" aria-live="polite">
            {plural(projects.length, "project")}
            {query.hasNextPage ? " shown" : ""}
          </p>
          <ul className="project-grid" aria-label="Your projects">
            {projects.map((project) => (
              <ProjectCard key={project.id} project={project} />
            ))}
          </ul>
        </>
      )}
      {query.hasNextPage && (
        <button
          type="button"
          onClick={() => void query.fetchNextPage()}
          disabled={query.isFetchingNextPage}
        >
          {query.isFetchingNextPage ? "Loading…" : "Show more projects"}
        </button>
      )}
    </section>
  );
}

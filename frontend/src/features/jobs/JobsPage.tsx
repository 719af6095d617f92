// The jobs list: /jobs (mine, or every job I can see) and /projects/:id/jobs.
//
// Live updates by polling, not one event stream per row: each SSE stream holds one of
// the browser's six HTTP/1.1 connections to the server (and a server task polling the
// database), so twenty running jobs would starve the page of connections. One list
// request every 2 s, only while a listed job is unfinished and the tab is visible,
// costs the same for 5 rows or 500. TanStack's structural sharing keeps unchanged rows
// the same objects, so the memoised rows below re-render only when their job changed.
// The job page, which shows one job, uses its stream (live log, progress at once).
import { useInfiniteQuery, useQuery } from "@tanstack/react-query";
import { memo, useId } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { isJobState, isUnfinished, JOB_STATES, type Job, kindLabel, STATE_LABELS } from "./format";
import { Duration, JobStatus } from "./parts";
import { jobsQuery, projectNamesQuery, projectQuery } from "./queries";
import "./jobs.css";

function whereItRuns(job: Job): string {
  if (!job.worker) return "—";
  return job.gpu !== null ? `${job.worker}, GPU ${job.gpu}` : job.worker;
}

const JobRow = memo(function JobRow({ job, projectName }: { job: Job; projectName: string | null | undefined }) {
  const kind = kindLabel(job.kind);
  return (
    <tr>
      <th scope="row">
        <Link to={`/jobs/${job.id}`} aria-label={`Job ${job.id}: ${kind}`}>
          #{job.id}
        </Link>
      </th>
      <td>{kind}</td>
      <td>
        <JobStatus job={job} label={`Progress of job ${job.id}`} />
        {job.state === "running" && job.message && <div className="muted small job-message">{job.message}</div>}
      </td>
      <td>{job.pool}</td>
      <td>{whereItRuns(job)}</td>
      <td>
        <Duration job={job} />
      </td>
      {projectName !== undefined && (
        <td>
          {job.project_id !== null ? (
            <Link to={`/projects/${job.project_id}`}>{projectName ?? `Project ${job.project_id}`}</Link>
          ) : (
            "—"
          )}
        </td>
      )}
      <td>{job.created_by_name ?? "—"}</td>
      <td>
        <time dateTime={job.created_at}>{new Date(job.created_at).toLocaleString()}</time>
      </td>
    </tr>
  );
});

export function JobsPage() {
  const rawProject = useParams().projectId;
  const projectId = rawProject === undefined ? null : Number(rawProject);
  const validProject = projectId === null || (Number.isSafeInteger(projectId) && projectId > 0);
  const [params, setParams] = useSearchParams();
  const stateId = useId();
  const rawState = params.get("state");
  const state = isJobState(rawState) ? rawState : null;
  const all = params.get("all") === "1";
  const mine = projectId === null && !all;
  const project = useQuery({ ...projectQuery(projectId ?? 0), enabled: projectId !== null && validProject });
  const jobs = useInfiniteQuery({ ...jobsQuery({ projectId, state, mine }), enabled: validProject });
  const names = useQuery({ ...projectNamesQuery, enabled: projectId === null });
  const title = projectId === null ? "Jobs" : `Jobs of ${project.data?.name ?? "the project"}`;
  useTitle(title);

  const setParam = (key: string, value: string | null) =>
    setParams(
      (prev) => {
        const next = new URLSearchParams(prev);
        if (value === null) next.delete(key);
        else next.set(key, value);
        return next;
      },
      { replace: true },
    );

  if (!validProject) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  const rows = jobs.data?.pages.flatMap((page) => page.items) ?? [];
  const live = rows.some(isUnfinished);
  const showProject = projectId === null;

  return (
    <section className="page">
      {projectId !== null && (
        <nav aria-label="Breadcrumb" className="crumbs">
          <Link to="/projects">Projects</Link> › <Link to={`/projects/${projectId}`}>{project.data?.name ?? "Project"}</Link>{" "}
          › Jobs
        </nav>
      )}
      <div className="page-head">
        <h1>{title}</h1>
      </div>
      <div className="toolbar jobs-toolbar">
        {projectId === null && (
          <fieldset className="segmented">
            <legend className="visually-hidden">Whose jobs</legend>
            <label>
              <input type="radio" name="whose" checked={!all} onChange={() => setParam("all", null)} />
              My jobs
            </label>
            <label>
              <input type="radio" name="whose" checked={all} onChange={() => setParam("all", "1")} />
              All jobs I can see
            </label>
          </fieldset>
        )}
        <div className="inline-field">
          <label htmlFor={stateId}>State</label>
          <select id={stateId} value={state ?? ""} onChange={(e) => setParam("state", e.target.value || null)}>
            <option value="">Any state</option>
            {JOB_STATES.map((s) => (
              <option key={s} value={s}>
                {STATE_LABELS[s]}
              </option>
            ))}
          </select>
        </div>
        {live && (
          <span className="muted small live-note" title="Refreshed every 2 seconds while a job is unfinished">
            <span className="live-dot" aria-hidden="true" /> live
          </span>
        )}
      </div>
      {jobs.isPending && <p className="page-status">Loading jobs…</p>}
      {jobs.isError && <ErrorMessage error={jobs.error} />}
      {jobs.isSuccess && rows.length === 0 && (
        <div className="empty">
          <h2>No jobs{state ? ` ${STATE_LABELS[state].toLowerCase()}` : ""}</h2>
          <p>
            Imports, exports, training runs and auto-labeling run as jobs; they show up here once
            {mine ? " you start one" : " someone starts one"}.
          </p>
        </div>
      )}
      {rows.length > 0 && (
        <div className="table-scroller">
          <table className="jobs-table" aria-label="Jobs">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Kind</th>
                <th scope="col">State</th>
                <th scope="col">Pool</th>
                <th scope="col">Worker</th>
                <th scope="col">Duration</th>
                {showProject && <th scope="col">Project</th>}
                <th scope="col">Started by</th>
                <th scope="col">Submitted</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((job) => (
                <JobRow
                  key={job.id}
                  job={job}
                  projectName={showProject ? (job.project_id !== null ? names.data?.get(job.project_id) ?? null : null) : undefined}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {jobs.hasNextPage && (
        <button type="button" onClick={() => void jobs.fetchNextPage()} disabled={jobs.isFetchingNextPage}>
          {jobs.isFetchingNextPage ? "Loading…" : "Load more jobs"}
        </button>
      )}
    </section>
  );
}

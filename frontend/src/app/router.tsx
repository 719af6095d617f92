import type { QueryClient } from "@tanstack/react-query";
import { createBrowserRouter, Navigate, type RouteObject } from "react-router";
import {
  decoded,
  fetchEarly,
  peekEarly,
  settleEarly,
  thumbnailFile,
  thumbnailIfLoaded,
  thumbnailLoaded,
} from "../api/prefetch";
import { AppShell } from "../components/AppShell";
import { NotFoundPage } from "../components/NotFoundPage";
import { RequireAdmin } from "../features/admin/RequireAdmin";
import { RequireAuth } from "../features/auth/RequireAuth";
import { SignInPage } from "../features/auth/SignInPage";
import { SIGN_IN_PATH } from "../features/auth/next";
// In the entry (a few KB): chunks of their own would be more requests in an opening.
import type { EditorStart } from "../features/editor/api";
import { paintEarlyFrame } from "../features/editor/earlyFrame";
import { startKeptEdit } from "../features/editor/keptEdit";
import { meQuery } from "../features/auth/queries";

// How long a route waits for data its page would otherwise show "Loading…" for: on a
// slow server the page shows promptly, with its loading state.
const DATA_WAIT_MS = 1500;

function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    work.then(done, done);
  });
}

export const appRoutes = (queryClient: QueryClient): RouteObject[] => [
  { path: SIGN_IN_PATH, element: <SignInPage /> },
  {
    element: <RequireAuth />,
    // The session (asked for since main.tsx started): a page opened by address renders
    // once it is known, not first as "Loading…" (a render, layout and paint for
    // nothing). Later navigations find it cached and do not wait; a failure (401) is
    // RequireAuth's to show.
    loader: async () => {
      await settledWithin(queryClient.ensureQueryData(meQuery), DATA_WAIT_MS);
      return null;
    },
    children: [
      {
        element: <AppShell />,
        children: [
          { index: true, element: <Navigate to="/projects" replace /> },
          {
            path: "projects",
            lazy: async () => ({
              Component: (await import("../features/projects/ProjectsPage")).ProjectsPage,
            }),
          },
          {
            path: "projects/new",
            lazy: async () => ({
              Component: (await import("../features/projects/NewProjectPage")).NewProjectPage,
            }),
          },
          {
            path: "projects/:projectId",
            lazy: async () => ({
              Component: (await import("../features/images/ProjectPage")).ProjectPage,
            }),
          },
          {
            // The box editor: Konva loads with this route only, never with sign-in.
            path: "projects/:projectId/images/:imageId",
            // The thumbnail (the editor's preview), the editor's start (image, project,
            // boxes, neighbours: one request) and the edit this browser kept for the
            // image download and are read while the editor's code loads, without
            // waiting for the session check (a 401 falls back to the client, which
            // signs in), and the route waits for them: the editor's first render is the
            // editor, with no "Loading image…" render, layout and paint before it. The
            // full file waits for the first frame.
            loader: async ({ params }) => {
              const id = Number(params.imageId);
              if (Number.isSafeInteger(id) && id > 0) {
                performance.mark("oculab:editor-route");
                const start = `/api/images/${id}/editor`;
                fetchEarly(start);
                // The preview decodes now, not once the editor has mounted.
                decoded(thumbnailFile(id)).catch(() => undefined);
                const kept = startKeptEdit(id);
                await settledWithin(Promise.all([settleEarly(start), thumbnailLoaded(id), kept.edit]), DATA_WAIT_MS);
                // Opened by address: the first frame now, before React renders the page
                // (earlyFrame.ts). Not over an edit kept in this browser: that is what the
                // editor will show.
                const opening = peekEarly<EditorStart>(start);
                const preview = thumbnailIfLoaded(id);
                if (opening?.image.project_id === Number(params.projectId) && preview && kept.settled?.edit === null) {
                  paintEarlyFrame(opening, preview);
                }
              }
              return null;
            },
            lazy: async () => ({
              Component: (await import("../features/editor/EditorPage")).EditorPage,
            }),
          },
          {
            path: "projects/:projectId/review",
            lazy: async () => ({
              Component: (await import("../features/review/ReviewPage")).ReviewPage,
            }),
          },
          {
            path: "projects/:projectId/settings",
            lazy: async () => ({
              Component: (await import("../features/projects/ProjectSettingsPage")).ProjectSettingsPage,
            }),
          },
          {
            path: "projects/:projectId/jobs",
            lazy: async () => ({
              Component: (await import("../features/jobs/JobsPage")).JobsPage,
            }),
          },
          {
            path: "projects/:projectId/training",
            lazy: async () => ({
              Component: (await import("../features/training/TrainingPage")).TrainingPage,
            }),
          },
          {
            path: "projects/:projectId/training/:jobId",
            // The run and its epochs download while the page's code (and uPlot) loads
            // (on a deep link the HTML names them, server/web/endpoints.py), and the page
            // waits for them: its first render draws the charts, with no "Loading the
            // run…" render, layout and paint before it. A failed GET does not fail the
            // route: the page shows the error as it would have.
            loader: async ({ params }) => {
              const id = Number(params.jobId);
              if (Number.isSafeInteger(id) && id > 0) {
                fetchEarly(`/api/jobs/${id}`);
                fetchEarly(`/api/jobs/${id}/metrics`);
                // The page's own chunk, which `lazy` loads too: no extra download.
                const { loadRun } = await import("../features/training/RunPage");
                await settledWithin(loadRun(queryClient, id), DATA_WAIT_MS);
              }
              return null;
            },
            lazy: async () => ({
              Component: (await import("../features/training/RunPage")).RunPage,
            }),
          },
          {
            path: "projects/:projectId/models",
            lazy: async () => ({
              Component: (await import("../features/models/ModelsPage")).ModelsPage,
            }),
          },
          {
            path: "projects/:projectId/models/:modelId",
            lazy: async () => ({
              Component: (await import("../features/models/ModelPage")).ModelPage,
            }),
          },
          {
            path: "projects/:projectId/predict",
            lazy: async () => ({
              Component: (await import("../features/models/PredictPage")).PredictPage,
            }),
          },
          {
            path: "jobs",
            lazy: async () => ({
              Component: (await import("../features/jobs/JobsPage")).JobsPage,
            }),
          },
          {
            path: "jobs/:jobId",
            lazy: async () => ({
              Component: (await import("../features/jobs/JobPage")).JobPage,
            }),
          },
          {
            path: "settings",
            lazy: async () => ({
              Component: (await import("../features/settings/SettingsPage")).SettingsPage,
            }),
          },
          {
            path: "admin",
            element: <RequireAdmin />,
            children: [
              { index: true, element: <Navigate to="/admin/queue" replace /> },
              {
                path: "queue",
                lazy: async () => ({
                  Component: (await import("../features/admin/QueuePage")).QueuePage,
                }),
              },
              {
                path: "users",
                lazy: async () => ({
                  Component: (await import("../features/admin/UsersPage")).UsersPage,
                }),
              },
              {
                path: "audit",
                lazy: async () => ({
                  Component: (await import("../features/admin/AuditPage")).AuditPage,
                }),
              },
            ],
          },
          { path: "*", element: <NotFoundPage /> },
        ],
      },
    ],
  },
];

export function createRouter(queryClient: QueryClient) {
  return createBrowserRouter(appRoutes(queryClient));
}

import { createBrowserRouter, Navigate, type RouteObject } from "react-router";
import { decoded, fetchEarly, imageFile, thumbnailFile } from "../api/prefetch";
import { AppShell } from "../components/AppShell";
import { NotFoundPage } from "../components/NotFoundPage";
import { RequireAuth } from "../features/auth/RequireAuth";
import { SignInPage } from "../features/auth/SignInPage";
import { SIGN_IN_PATH } from "../features/auth/next";

let firstNavigation = true;

export const routes: RouteObject[] = [
  { path: SIGN_IN_PATH, element: <SignInPage /> },
  {
    element: <RequireAuth />,
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
            // The image, its thumbnail (the editor's preview), its record, its boxes
            // and the project download while the editor's code loads, without waiting
            // for the session check (a 401 falls back to the client, which signs in).
            loader: ({ params }) => {
              const id = Number(params.imageId);
              const projectId = Number(params.projectId);
              if (Number.isSafeInteger(id) && id > 0) {
                imageFile(id);
                // The preview decodes now, not once the editor has mounted.
                decoded(thumbnailFile(id)).catch(() => undefined);
                fetchEarly(`/api/images/${id}/annotations`);
                fetchEarly(`/api/images/${id}`);
              }
              // The project only when the app opens here: later it is in the cache.
              if (firstNavigation && Number.isSafeInteger(projectId) && projectId > 0) {
                fetchEarly(`/api/projects/${projectId}`);
              }
              firstNavigation = false;
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
          { path: "*", element: <NotFoundPage /> },
        ],
      },
    ],
  },
];

export function createRouter() {
  return createBrowserRouter(routes);
}

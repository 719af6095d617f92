import { QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RouterProvider } from "react-router";
import { onUnauthorized } from "./api/client";
import { createQueryClient } from "./app/queryClient";
import { createRouter } from "./app/router";
import { SIGN_IN_PATH, signInPath } from "./features/auth/next";
import { meQuery } from "./features/auth/queries";
import "./styles.css";

const queryClient = createQueryClient();
// The session check starts now, before the router loads a page's code or React
// renders: by the time a page's chunk has arrived, RequireAuth finds the answer
// waiting instead of asking then. (The sign-in page needs no session.)
if (window.location.pathname !== SIGN_IN_PATH) void queryClient.prefetchQuery(meQuery);
const router = createRouter(queryClient);

// Any 401 (the session expired or was ended elsewhere): forget what this user could
// see and sign in again, then come back here.
onUnauthorized(() => {
  const here = router.state.location;
  if (here.pathname === SIGN_IN_PATH) return;
  queryClient.clear();
  void router.navigate(signInPath(here), { replace: true });
});

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root");
const render = () =>
  createRoot(root).render(
    <StrictMode>
      <QueryClientProvider client={queryClient}>
        <RouterProvider router={router} />
      </QueryClientProvider>
    </StrictMode>,
  );
// The first render waits for the first page's code and data (the router loads them;
// until then there is nothing to show): React then renders and commits the page in
// one go, rather than rendering an empty router, then the page in time slices with
// the browser laying out and painting the half-done states in between.
if (router.state.initialized) render();
else {
  const stop = router.subscribe((state) => {
    if (!state.initialized) return;
    stop();
    render();
  });
}

import { useQuery } from "@tanstack/react-query";
import { Navigate, Outlet, useLocation } from "react-router";
import { ApiError } from "../../api/errors";
import { ErrorMessage } from "../../components/ErrorMessage";
import { signInPath } from "./next";
import { meQuery } from "./queries";

/** Renders its routes for a signed-in user; anyone else goes to sign-in and comes back. */
export function RequireAuth() {
  const location = useLocation();
  const me = useQuery(meQuery);
  if (me.isPending) return <p className="page-status">Loading…</p>;
  if (me.error instanceof ApiError && me.error.status === 401) {
    return <Navigate to={signInPath(location)} replace />;
  }
  if (me.isError) return <ErrorMessage error={me.error} />;
  return <Outlet />;
}

import { useQuery } from "@tanstack/react-query";
import { Link, Outlet } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { meQuery } from "../auth/queries";

/** The admin pages for admins; everyone else gets a 403 page (the API refuses them too). */
export function RequireAdmin() {
  const me = useQuery(meQuery);
  if (me.isPending) return <p className="page-status">Loading…</p>;
  if (me.isError) return <ErrorMessage error={me.error} />;
  if (!me.data.is_admin) return <Forbidden />;
  return <Outlet />;
}

function Forbidden() {
  useTitle("Forbidden");
  return (
    <section className="page">
      <h1>Forbidden</h1>
      <p>This page is for Oculab’s administrators. Ask one if you need something changed here.</p>
      <p>
        <Link to="/projects">Go to your projects</Link>
      </p>
    </section>
  );
}

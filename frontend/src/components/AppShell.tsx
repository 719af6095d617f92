import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, NavLink, Outlet, useNavigate } from "react-router";
import { errorMessage } from "../api/errors";
import { meQuery } from "../features/auth/queries";
import { signOut } from "../features/auth/signOut";
import { SIGN_IN_PATH } from "../features/auth/next";
import { KeptEditsNotice } from "./KeptEditsNotice";

export function AppShell() {
  const me = useQuery(meQuery);
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const logout = useMutation({
    mutationFn: () => signOut(queryClient),
    onSuccess: (redirect) => {
      if (redirect) window.location.assign(redirect);
      else void navigate(SIGN_IN_PATH, { replace: true });
    },
  });
  const user = me.data;
  const name = user?.display_name || user?.username || "";

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/projects" className="brand">
          <span className="brand-mark" aria-hidden="true" />
          Oculab
        </Link>
        <nav aria-label="Main">
          <ul>
            <li>
              <NavLink to="/projects">Projects</NavLink>
            </li>
            <li>
              <NavLink to="/jobs">Jobs</NavLink>
            </li>
            {user?.is_admin && (
              <>
                <li>
                  <NavLink to="/admin/queue">GPU queue</NavLink>
                </li>
                <li>
                  <NavLink to="/admin/users">Users</NavLink>
                </li>
                <li>
                  <NavLink to="/admin/audit">Audit log</NavLink>
                </li>
              </>
            )}
            <li>
              <NavLink to="/settings">Settings</NavLink>
            </li>
          </ul>
        </nav>
        <div className="user">
          {user && (
            <span className="user-name" title={user.email ?? user.username}>
              <span className="visually-hidden">Signed in as </span>
              {name}
              {user.is_admin && <span className="badge">admin</span>}
            </span>
          )}
          <button type="button" onClick={() => logout.mutate()} disabled={logout.isPending}>
            Sign out
          </button>
        </div>
      </header>
      {logout.isError && (
        <p role="alert" className="error banner">
          Could not sign out: {errorMessage(logout.error)}
        </p>
      )}
      <KeptEditsNotice />
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </>
  );
}

// Admin — users: create local accounts, disable/enable, make or unmake admin, reset a
// local account's password. What the server refuses (the last admin, an SSO user's
// password) is not offered where it is knowable, and said plainly when refused.
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { api, type Schemas } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { Dialog } from "../../components/Dialog";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { authConfigQuery, meQuery } from "../auth/queries";
import {
  type AdminUser,
  adminUsersQuery,
  isLastActiveAdmin,
  matchesUser,
  MIN_PASSWORD,
  newUserProblem,
  signInMethod,
  USERS_KEY,
} from "./users";
import "./users.css";

type UserUpdate = Schemas["UserUpdate"];

function when(value: string | null): string {
  return value ? new Date(value).toLocaleString() : "never";
}

function useUpdateUser(user: AdminUser) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: UserUpdate) =>
      unwrap(await api.PATCH("/api/admin/users/{user_id}", { params: { path: { user_id: user.id } }, body })),
    onSuccess: async () => {
      await queryClient.invalidateQueries({ queryKey: USERS_KEY });
      // Changing one's own account changes what the app offers (the admin menu).
      await queryClient.invalidateQueries({ queryKey: keys.me, exact: true });
    },
  });
}

function CreateUser() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [isAdmin, setIsAdmin] = useState(false);
  const [touched, setTouched] = useState(false);
  const [created, setCreated] = useState<string | null>(null);
  const queryClient = useQueryClient();
  const problem = newUserProblem(username, password);
  const hintId = useId();
  const create = useMutation({
    mutationFn: async () =>
      unwrap(await api.POST("/api/admin/users", { body: { username, password, is_admin: isAdmin } })),
    onSuccess: (user) => {
      setCreated(user.username);
      setUsername("");
      setPassword("");
      setIsAdmin(false);
      setTouched(false);
      void queryClient.invalidateQueries({ queryKey: USERS_KEY });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setTouched(true);
    setCreated(null);
    if (!problem) create.mutate();
  };
  return (
    <form className="user-form card" onSubmit={submit} aria-labelledby="create-user-heading">
      <h2 id="create-user-heading">Create a local account</h2>
      <div className="user-form-row">
        <label className="field">
          <span>Username</span>
          <input value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="off" maxLength={64} />
        </label>
        <label className="field">
          <span>Password</span>
          <input
            type="password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            autoComplete="new-password"
            aria-describedby={hintId}
          />
        </label>
        <label className="check">
          <input type="checkbox" checked={isAdmin} onChange={(e) => setIsAdmin(e.target.checked)} />
          Administrator
        </label>
        <button type="submit" className="primary" disabled={create.isPending}>
          {create.isPending ? "Creating…" : "Create account"}
        </button>
      </div>
      <p id={hintId} className={touched && problem ? "error small" : "muted small"}>
        {touched && problem
          ? problem
          : `At least ${MIN_PASSWORD} characters. Give the password to the person in a safe way; they sign in with it at the sign-in page.`}
      </p>
      {create.isError && (
        <p role="alert" className="error">
          Refused: {errorMessage(create.error)}
        </p>
      )}
      {created && (
        <p role="status" className="ok">
          Account “{created}” created.
        </p>
      )}
    </form>
  );
}

function ResetPassword({ user }: { user: AdminUser }) {
  const [open, setOpen] = useState(false);
  const [password, setPassword] = useState("");
  const update = useUpdateUser(user);
  const tooShort = password.length < MIN_PASSWORD;
  const close = () => {
    setOpen(false);
    setPassword("");
    update.reset();
  };
  return (
    <>
      <button type="button" onClick={() => setOpen(true)}>
        Reset password of {user.username}
      </button>
      <Dialog
        open={open}
        onClose={close}
        title={`New password for ${user.username}`}
        description={<p>The old password stops working at once; sessions already signed in stay signed in.</p>}
      >
        <form
          className="stack"
          onSubmit={(event) => {
            event.preventDefault();
            if (!tooShort) update.mutate({ password }, { onSuccess: close });
          }}
        >
          <label className="field">
            <span>New password</span>
            <input type="password" value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="new-password" />
          </label>
          <p className="muted small">At least {MIN_PASSWORD} characters.</p>
          {update.isError && (
            <p role="alert" className="error">
              Refused: {errorMessage(update.error)}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="primary" disabled={tooShort || update.isPending}>
              Set the password
            </button>
            <button type="button" onClick={close}>
              Cancel
            </button>
          </div>
        </form>
      </Dialog>
    </>
  );
}

function UserRow({ user, me, lastAdmin }: { user: AdminUser; me: number | undefined; lastAdmin: boolean }) {
  const update = useUpdateUser(user);
  const self = user.id === me;
  const name = user.display_name && user.display_name !== user.username ? user.display_name : null;

  const toggleActive = () => {
    const disabling = user.is_active;
    if (
      disabling &&
      !window.confirm(
        self
          ? "Disable your own account? You are signed out at once and cannot sign in again until another admin enables it."
          : `Disable ${user.username}? They are signed out at once and can no longer sign in or use their API tokens.`,
      )
    ) {
      return;
    }
    update.mutate({ is_active: !user.is_active });
  };
  const toggleAdmin = () => {
    if (user.is_admin && self && !window.confirm("Remove your own admin rights? You lose these pages at once.")) return;
    update.mutate({ is_admin: !user.is_admin });
  };

  return (
    <tr className={user.is_active ? undefined : "inactive"}>
      <th scope="row">
        {user.username}
        {self && (
          <>
            {" "}
            <span className="badge">you</span>
          </>
        )}
        {name && <div className="muted small">{name}</div>}
        {user.email && <div className="muted small">{user.email}</div>}
      </th>
      <td>{signInMethod(user)}</td>
      <td>
        {user.is_admin ? <span className="pill pill-admin">admin</span> : <span className="muted">member</span>}
      </td>
      <td>
        {user.is_active ? <span className="pill pill-ok">active</span> : <span className="pill pill-off">disabled</span>}
      </td>
      <td>{when(user.last_login_at)}</td>
      <td className="user-actions">
        {lastAdmin ? (
          <span className="muted small">The last active admin: make someone else admin first.</span>
        ) : (
          <>
            <button type="button" onClick={toggleActive} disabled={update.isPending}>
              {user.is_active ? `Disable ${user.username}` : `Enable ${user.username}`}
            </button>
            <button type="button" onClick={toggleAdmin} disabled={update.isPending}>
              {user.is_admin ? `Remove admin from ${user.username}` : `Make ${user.username} admin`}
            </button>
          </>
        )}
        {user.is_local ? (
          <ResetPassword user={user} />
        ) : (
          <span className="muted small">Password kept by the identity provider</span>
        )}
        {update.isError && (
          <p role="alert" className="error small">
            Refused: {errorMessage(update.error)}
          </p>
        )}
      </td>
    </tr>
  );
}

export function UsersPage() {
  useTitle("Users");
  const users = useInfiniteQuery(adminUsersQuery);
  const me = useQuery(meQuery);
  const config = useQuery(authConfigQuery);
  const [filter, setFilter] = useState("");
  const all = users.data?.pages.flatMap((page) => page.items) ?? [];
  const complete = users.isSuccess && !users.hasNextPage;
  const shown = all.filter((u) => matchesUser(u, filter));

  return (
    <section className="page users-page">
      <div className="page-head">
        <h1>Users</h1>
      </div>
      {config.data?.local === false ? (
        <p className="muted card">
          Local accounts are turned off (OCULAB_LOCAL_ACCOUNTS=false): people sign in through the identity provider and
          appear here after their first sign-in.
        </p>
      ) : (
        <CreateUser />
      )}
      <div className="toolbar users-toolbar">
        <label className="inline-field">
          <span>Find</span>
          <input
            type="search"
            value={filter}
            onChange={(e) => setFilter(e.target.value)}
            placeholder="name, username, e-mail or group"
            aria-label="Find users"
          />
        </label>
        {users.isSuccess && (
          <span className="muted small" aria-live="polite">
            {filter.trim() ? `${shown.length} of ${all.length}` : `${all.length}`} account{all.length === 1 ? "" : "s"}
            {users.hasNextPage ? " loaded" : ""}
          </span>
        )}
      </div>
      {users.isPending && <p className="page-status">Loading users…</p>}
      {users.isError && <ErrorMessage error={users.error} />}
      {shown.length > 0 && (
        <div className="table-wrap">
          <table className="users" aria-label="Users">
            <thead>
              <tr>
                <th scope="col">Account</th>
                <th scope="col">Signs in with</th>
                <th scope="col">Role</th>
                <th scope="col">Status</th>
                <th scope="col">Last sign-in</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {shown.map((user) => (
                <UserRow key={user.id} user={user} me={me.data?.id} lastAdmin={isLastActiveAdmin(user, all, complete)} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {users.isSuccess && shown.length === 0 && <p className="muted">Nobody matches “{filter.trim()}”.</p>}
      {users.hasNextPage && (
        <button type="button" onClick={() => void users.fetchNextPage()} disabled={users.isFetchingNextPage}>
          {users.isFetchingNextPage ? "Loading…" : "Load more users"}
        </button>
      )}
    </section>
  );
}

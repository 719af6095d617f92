import { ApiError, errorMessage } from "../api/errors";

export function ErrorMessage({ error, title }: { error: unknown; title?: string }) {
  const notFound = error instanceof ApiError && error.status === 404;
  return (
    <div role="alert" className="error-panel">
      <h2>{title ?? (notFound ? "Not found" : "Something went wrong")}</h2>
      <p>{errorMessage(error)}</p>
    </div>
  );
}

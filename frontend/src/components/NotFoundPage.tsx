import { Link } from "react-router";
import { useTitle } from "./useTitle";

export function NotFoundPage() {
  useTitle("Not found");
  return (
    <section className="page">
      <h1>Not found</h1>
      <p>There is no page at this address.</p>
      <p>
        <Link to="/projects">Go to your projects</Link>
      </p>
    </section>
  );
}

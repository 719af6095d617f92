import { queryOptions } from "@tanstack/react-query";
import { api } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";

export const meQuery = queryOptions({
  queryKey: keys.me,
  queryFn: async () => unwrap(await api.GET("/api/me")),
  staleTime: 60_000,
});

export const authConfigQuery = queryOptions({
  queryKey: keys.authConfig,
  queryFn: async () => unwrap(await api.GET("/api/auth/config")),
  staleTime: Number.POSITIVE_INFINITY,
});

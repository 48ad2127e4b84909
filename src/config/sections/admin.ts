/** `admin:`: the HTTP admin server. */
import { DEFAULTS } from '../../defaults.js';
import type { AdminModel } from '../model.js';
import { filePath, kind, object } from '../schema-nodes.js';
import { readTokenFile } from '../token-file.js';
import { UNRESOLVED, asObject, asString, type Check, type Draft, type Obj } from './context.js';

/** The schema node of `admin`. */
export const adminSchema = object(
  'The HTTP admin server: GET /healthz, /metrics (Prometheus), /status (JSON) and / (an HTML status page), ' +
    'and POST /pools/POOL/servers/SERVER/state to drain, ready or maint a server. Absent: no admin server.',
  {
    listen: kind('bind', {
      description:
        'Address of the admin server: "host:port" or "[IPv6]:port". Status and metrics need no token, so keep it on loopback ' +
        `or a private network (a warning is logged otherwise when there is no token_file). Default: ${DEFAULTS.adminListen}.`,
      type: 'string',
      maxLength: 300,
      default: DEFAULTS.adminListen,
    }),
    token_file: filePath(
      'File holding the bearer token that state changes need (Authorization: Bearer TOKEN); surrounding whitespace is ignored. ' +
        'Read when the configuration is loaded and when the admin server starts; a relative path is relative to the working directory. ' +
        'Absent: state changes are refused.',
    ),
  },
);

/**
 * Reads `admin:` (null: no admin server). Its address is resolved in the
 * background; its token file must be readable now, by the owner rules of
 * config/token-file.ts (the owner may also be the user l4lb drops to).
 */
export function normaliseAdmin(check: Check, value: unknown, root: Obj): Draft<AdminModel> | null {
  const o = asObject(value);
  if (!o) return null;
  const tokenFile = asString(o.token_file) ?? null;
  const draft: Draft<AdminModel> = { path: 'admin', value: { listen: UNRESOLVED, tokenFile } };
  check.address('admin.listen', o.listen ?? DEFAULTS.adminListen, true, (ep) => (draft.value = { ...draft.value, listen: ep }));
  if (tokenFile !== null && tokenFile !== '') {
    check.wait(
      readTokenFile(tokenFile, { user: asString(root.user) ?? null, group: asString(root.group) ?? null }).then((r) => {
        if (typeof r === 'string') check.add('admin.token_file', r);
      }),
    );
  }
  return draft;
}

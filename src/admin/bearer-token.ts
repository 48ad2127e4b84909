/**
 * The admin server's bearer token: read from `admin.token_file` once at
 * start and kept only as its SHA-256 digest (for the check) and the key of
 * the MACs that stand in for secrets in `GET /config`; the token itself is
 * not kept. One check serves every protected endpoint.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { redactionKey } from '../config/model-json.js';
import { readTokenFile } from '../config/token-file.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { CLOSE, HttpError } from './http.js';

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** What the admin server keeps of its token. */
export class BearerToken {
  readonly #digest: Buffer;
  /** Key for the MACs that stand in for secrets in `GET /config` (derived from the token). */
  readonly redactionKey: Buffer;

  private constructor(token: string) {
    this.#digest = digest(token);
    this.redactionKey = redactionKey(token);
  }

  /**
   * Reads the token file (rejects with ConfigError naming `admin.token_file`)
   * and warns when every user may read it.
   */
  static async load(tokenFile: string, logger: Logger): Promise<BearerToken> {
    const r = await readTokenFile(tokenFile);
    if (typeof r === 'string') throw new ConfigError([{ path: 'admin.token_file', message: r }]);
    const mode = await stat(tokenFile).then((s) => s.mode, () => 0);
    if ((mode & 0o004) !== 0) {
      logger.warn({ token_file: tokenFile }, 'admin token file is readable by every user; let only root and the group l4lb runs as read it, as scripts/install.sh does: chown root:l4lb FILE && chmod 0640 FILE');
    }
    return new BearerToken(r.token);
  }

  /** Whether `presented` is the token; takes the same time whatever its length or content (equal-length digests). */
  matches(presented: string): boolean {
    return timingSafeEqual(digest(presented), this.#digest);
  }
}

/**
 * The check of every protected endpoint: returns when the `Authorization`
 * header carries the token, else throws 403 (no token configured) or 401.
 * Its answers close the connection: a body that was not read is not parsed
 * as the next request.
 */
export function authorize(token: BearerToken | null, authorization: string | undefined): void {
  if (token === null) {
    throw new HttpError(403, 'disabled: no admin.token_file is configured (state changes and GET /config need the bearer token)', CLOSE);
  }
  const auth = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
  const challenge = { ...CLOSE, 'WWW-Authenticate': 'Bearer realm="l4lb"' };
  if (auth === null) throw new HttpError(401, 'missing bearer token (Authorization: Bearer TOKEN)', challenge);
  if (!token.matches(auth[1]!)) throw new HttpError(401, 'invalid token', challenge);
}

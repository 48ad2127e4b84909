/**
 * The PostgreSQL harness (helpers/postgres.ts) itself: a throw-away cluster
 * answers psql over TCP and its Unix socket, pgbench runs against it, TLS
 * works when asked for, the teardown leaves nothing behind, and the server
 * logs no error along the way.
 */
import { existsSync } from 'node:fs';
import t, { type Test } from 'tap';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { pgbench, pgbenchInit, postgresMissing, psql, startPostgres, type PgCluster } from './helpers/postgres.js';
import { need } from './helpers/requirements.js';

/** ERROR, FATAL and PANIC lines of the server's log. */
function problems(cluster: PgCluster): string[] {
  return cluster.log().split('\n').filter((l) => /\b(ERROR|FATAL|PANIC):/.test(l));
}

async function sql(t: Test, cluster: PgCluster, query: string, connString?: string): Promise<string> {
  const r = await psql(cluster, ['-At', '-c', query], connString !== undefined ? { connString } : {});
  t.equal(r.status, 0, `psql -c "${query}" exits 0${r.status === 0 ? '' : `: ${r.stderr}`}`);
  return r.stdout.trim();
}

function main(): void {
  t.test('a cluster without TLS answers psql and pgbench, and stop() leaves nothing behind', async (t) => {
    const started = Date.now();
    const cluster = await startPostgres(t);
    t.comment(`PostgreSQL ${cluster.version} on 127.0.0.1:${cluster.port} in ${Date.now() - started} ms`);
    t.equal(await sql(t, cluster, 'select 1'), '1', 'select 1 over TCP');
    t.equal(await sql(t, cluster, 'show port'), String(cluster.port), 'the server listens on the port it reports');
    t.equal(await psql({ host: cluster.dataDir, port: cluster.port }, ['-At', '-c', 'select 2']).then((r) => r.stdout.trim()), '2', 'select 2 over the Unix socket in the data directory');
    t.equal(await sql(t, cluster, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'), 'f', 'no TLS unless asked for');

    const failed = await psql(cluster, ['-c', 'select * from no_such_table']);
    t.not(failed.status, 0, 'ON_ERROR_STOP: a failing statement fails psql');
    t.match(failed.stderr, /no_such_table/, 'with the server error on stderr');

    const init = await pgbenchInit(cluster);
    t.equal(init.status, 0, `pgbench -i exits 0${init.status === 0 ? '' : `: ${init.stderr}`}`);
    const run = await pgbench(cluster, { clients: 2, jobs: 1, seconds: 1 });
    t.equal(run.status, 0, `pgbench exits 0${run.status === 0 ? '' : `: ${run.stderr}`}`);
    t.ok(run.tps !== null && run.tps > 0, `pgbench reports a tps figure (${run.tps})`);

    // Only the statement above may have complained.
    t.same(problems(cluster).filter((l) => !/no_such_table/.test(l)), [], 'no other ERROR/FATAL/PANIC in the server log');
    await cluster.stop();
    t.notOk(existsSync(cluster.dataDir), 'stop() removes the data directory');
    t.match(cluster.log(), /database system is shut down/, 'the server shut down cleanly, and its log outlives the directory');
    t.equal(cluster.exited(), 'code 0', 'the server process exited 0');
  });

  t.test('a cluster with TLS serves sslmode=require', async (t) => {
    if (!need(t, opensslMissing)) return;
    const cluster = await startPostgres(t, { ssl: testCerts().pair('backend.test') });
    t.equal(await sql(t, cluster, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', 'sslmode=require'), 't', 'the session is encrypted');
    t.match(await sql(t, cluster, 'select version from pg_stat_ssl where pid = pg_backend_pid()', 'sslmode=require'), /^TLSv1\.[23]$/, 'with TLS 1.2 or 1.3');
    t.same(problems(cluster), [], 'no ERROR/FATAL/PANIC in the server log');
  });
}

if (need(t, postgresMissing())) main();

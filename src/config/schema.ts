/**
 * The configuration file's JSON Schema — the single list of accepted keys,
 * their types and their documentation. Each section's node is defined next
 * to the code that reads it (./sections/), from the same defaults
 * (../defaults.ts) and word lists (./enums.ts). A key appears here only once
 * l4lb acts on it.
 */
import { object, type JsonSchema } from './schema-nodes.js';
import { adminSchema } from './sections/admin.js';
import { geoipSchema, listenerSchema } from './sections/listener.js';
import { poolSchema } from './sections/pool.js';
import { dnsSchema, graceSchema, groupSchema, logSchema, userSchema, workersSchema } from './sections/top.js';

export type { JsonSchema } from './schema-nodes.js';

/** The JSON Schema of the configuration file (draft-07). */
export const configSchema: JsonSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'l4lb configuration',
  ...object(
    'Configuration of l4lb, a Layer 4 TCP load balancer. Written in YAML (.yaml, .yml) or JSON (.json).',
    {
      admin: adminSchema,
      log: logSchema,
      workers: workersSchema,
      grace: graceSchema,
      dns: dnsSchema,
      geoip: geoipSchema,
      user: userSchema,
      group: groupSchema,
      listeners: {
        description: 'Where l4lb accepts connections; at least one.',
        type: 'array',
        minItems: 1,
        items: listenerSchema,
      },
      pools: {
        description: 'Groups of backend servers; at least one.',
        type: 'array',
        minItems: 1,
        items: poolSchema,
      },
    },
    ['listeners', 'pools'],
  ),
};

// Reads a JSON array of Cypher statements on stdin; prints, per statement, the diagnostics of Neo4j's
// Cypher grammar other than "parameter not defined" (parameters are supplied at run time).
import { lintCypherQuery } from '@neo4j-cypher/language-support';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((query) => {
  const { diagnostics } = lintCypherQuery(query, {});
  return diagnostics
    .filter((d) => !/^Parameter \$\w+ is not defined/.test(d.message))
    .map((d) => ({ severity: d.severity, message: d.message, offset: d.offsets?.start }));
});
process.stdout.write(JSON.stringify(results));

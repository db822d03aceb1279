// The API report: what each package entry point exports, with every signature, as API Extractor
// renders it from dist/*.d.ts. `npm test` compares it with the checked-in `api/<entry>.api.md` and
// fails with the diff, so an export added or changed by accident is seen in review;
// `npm run api:update` rewrites the reports after an intended change.
//   node --import tsx scripts/api-report.ts            compare (needs `npm run build` first)
//   node --import tsx scripts/api-report.ts --update   rewrite api/*.api.md
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Extractor, ExtractorConfig, ExtractorLogLevel } from '@microsoft/api-extractor';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const update = process.argv.includes('--update');
/** The part of package.json this script reads. */
interface PackageJson {
  readonly name: string;
  readonly exports: Record<string, string | { readonly types?: string }>;
}
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as PackageJson;

// One report per entry of package.json `exports` (`./package.json` aside): a new subpath gets a
// report without touching this script.
const entries = Object.entries(pkg.exports)
  .flatMap(([subpath, target]) =>
    typeof target === 'object' && target.types !== undefined
      ? [{ name: subpath === '.' ? 'index' : subpath.slice(2), types: path.join(root, target.types) }]
      : [],
  );

const tempFolder = mkdtempSync(path.join(os.tmpdir(), 'virt-imagecache-api-'));
let failed = false;
try {
  for (const entry of entries) {
    if (!existsSync(entry.types)) {
      console.error(`${entry.types} is missing: run \`npm run build\` first.`);
      process.exitCode = 1;
      failed = true;
      continue;
    }
    const config = ExtractorConfig.prepare({
      configObject: {
        projectFolder: root,
        mainEntryPointFilePath: entry.types,
        compiler: { tsconfigFilePath: path.join(root, 'tsconfig.build.json') },
        apiReport: {
          enabled: true,
          reportFileName: entry.name,
          reportFolder: path.join(root, 'api'),
          reportTempFolder: tempFolder,
        },
        docModel: { enabled: false },
        dtsRollup: { enabled: false },
        tsdocMetadata: { enabled: false },
        messages: {
          compilerMessageReporting: { default: { logLevel: ExtractorLogLevel.Warning } },
          // Release tags, TSDoc syntax and types the API uses but no entry exports are typedoc's
          // job here (typedoc.json's validation); API Extractor would also flag a type a subpath uses
          // that the root exports, as it sees one entry at a time.
          extractorMessageReporting: { default: { logLevel: ExtractorLogLevel.None, addToApiReportFile: false } },
          tsdocMessageReporting: { default: { logLevel: ExtractorLogLevel.None } },
        },
      },
      configObjectFullPath: undefined,
      packageJsonFullPath: path.join(root, 'package.json'),
    });
    const result = Extractor.invoke(config, {
      localBuild: update,
      messageCallback: (message) => {
        // Only problems are printed: the banner, the TypeScript version and "report unchanged" are noise.
        if (message.logLevel !== ExtractorLogLevel.Error && message.logLevel !== ExtractorLogLevel.Warning) message.handled = true;
        // The report's own status is told below, with the diff.
        else if (message.messageId.startsWith('console-api-report')) message.handled = true;
      },
    });
    const report = path.join(root, 'api', `${entry.name}.api.md`);
    if (update) {
      if (!result.succeeded) failed = true;
      console.log(`${path.relative(root, report)}: ${result.apiReportChanged ? 'rewritten' : 'unchanged'}`);
    } else if (result.apiReportChanged) {
      failed = true;
      console.error(`\nThe API of '${entry.name === 'index' ? pkg.name : `${pkg.name}/${entry.name}`}' differs from ${path.relative(root, report)}:`);
      const fresh = path.join(tempFolder, `${entry.name}.api.md`);
      try {
        execFileSync('git', ['diff', '--no-index', '--no-color', '--', existsSync(report) ? report : '/dev/null', fresh], { stdio: ['ignore', 2, 2] });
      } catch {
        // git diff exits 1 when the files differ: the diff is the message.
      }
    } else if (!result.succeeded) {
      failed = true;
    }
  }
} finally {
  rmSync(tempFolder, { recursive: true, force: true });
}
if (failed && !update) {
  console.error('\nIf the change is intended, run `npm run api:update` and commit api/*.api.md with it.');
}
if (failed) process.exitCode = 1;

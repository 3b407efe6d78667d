'use strict';
// Back-end flows on the real Node service SDK (azure-iothub), run by fleethub's compat tests:
// `node service.js FLOW '{json arguments}'`. Each flow uses the SDK as its documentation does
// (Registry, Client, JobClient with promises), asserts what it can check itself, and prints
// one JSON line with what it saw. SERVICE_CONNECTION_STRING names the hub;
// NODE_EXTRA_CA_CERTS trusts its CA.

const assert = require('assert');
const crypto = require('crypto');
const { Client, JobClient, Registry } = require('azure-iothub');

const connectionString = process.env.SERVICE_CONNECTION_STRING;
const registry = Registry.fromConnectionString(connectionString);
const jobClient = JobClient.fromConnectionString(connectionString);

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function httpStatus(call) {
  try {
    await call();
  } catch (err) {
    return err.response ? err.response.statusCode : -1;
  }
  return 200;
}

function jobJson(job) {
  const stats = job.deviceJobStatistics;
  return {
    jobId: job.jobId,
    type: job.type,
    status: job.status,
    statistics: stats ? { deviceCount: stats.deviceCount, succeededCount: stats.succeededCount, failedCount: stats.failedCount } : null,
  };
}

async function waitFor(jobId) {
  for (let attempt = 0; attempt < 120; attempt++) {
    const { jobStatus } = await jobClient.getJob(jobId);
    if (['completed', 'failed', 'cancelled'].includes(jobStatus.status)) return jobStatus;
    await sleep(1000);
  }
  throw new Error('job ' + jobId + ' did not finish');
}

// Query.next() in promise form drops the continuation token when called without arguments
// (azure-iothub 1.16), so pages are read with the callback form the SDK's samples use.
function nextPage(query) {
  return new Promise((resolve, reject) => {
    query.next((err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function deviceResults(jobId) {
  const query = registry.createQuery("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '" + jobId + "'");
  const rows = [];
  do {
    rows.push(...(await nextPage(query)));
  } while (query.hasMoreResults);
  return rows.map((row) => ({ deviceId: row.deviceId, status: row.status, outcome: row.outcome }));
}

const flows = {
  async identity({ deviceId }) {
    const primaryKey = crypto.randomBytes(32).toString('base64');
    const secondaryKey = crypto.randomBytes(32).toString('base64');
    const device = {
      deviceId: deviceId,
      status: 'enabled',
      authentication: { symmetricKey: { primaryKey: primaryKey, secondaryKey: secondaryKey } },
    };
    const created = (await registry.create(device)).responseBody;
    const fetched = (await registry.get(deviceId)).responseBody;
    assert.strictEqual(fetched.authentication.symmetricKey.primaryKey, primaryKey);
    fetched.status = 'disabled';
    const updated = (await registry.update(fetched)).responseBody;
    const duplicateStatus = await httpStatus(() => registry.create(device));
    return { deviceId: created.deviceId, status: created.status, updatedStatus: updated.status, duplicateStatus, primaryKey };
  },

  async twin({ deviceId }) {
    const first = (await registry.getTwin(deviceId)).responseBody;
    const updated = (await registry.updateTwin(deviceId, { tags: { building: '43' }, properties: { desired: { floor: 3 } } }, first.etag)).responseBody;
    const staleEtagStatus = await httpStatus(() => registry.updateTwin(deviceId, { tags: { x: 1 } }, first.etag));
    // The Twin object's own update() sends its etag (If-Match) too.
    const again = (await registry.getTwin(deviceId)).responseBody;
    const patched = (await again.update({ tags: { wing: 'B' }, properties: { desired: { floor: 5 } } })).result;
    return {
      firstEtag: first.etag,
      updated: { tags: updated.tags, desired: updated.properties.desired, etag: updated.etag },
      staleEtagStatus,
      patched: { tags: patched.tags, desired: patched.properties.desired, etag: patched.etag },
    };
  },

  async method({ deviceId, payload }) {
    const client = Client.fromConnectionString(connectionString);
    const methodParams = { methodName: 'lockDoor', payload: payload, responseTimeoutInSeconds: 15 };
    const { result } = await client.invokeDeviceMethod(deviceId, methodParams);
    return { status: result.status, payload: result.payload };
  },

  async query({ sql, pageSize }) {
    const query = registry.createQuery(sql, pageSize);
    const pages = [];
    while (query.hasMoreResults) {
      const { result } = await query.nextAsTwin();
      pages.push(result.map((twin) => twin.deviceId));
    }
    return { pages };
  },

  async method_job({ jobId, condition }) {
    const methodParams = { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 15 };
    const created = (await jobClient.scheduleDeviceMethod(jobId, condition, methodParams, new Date(), 60)).jobStatus;
    const finished = await waitFor(jobId);
    return { created: jobJson(created), finished: jobJson(finished), devices: await deviceResults(jobId) };
  },

  async twin_job({ jobId, condition }) {
    const patch = { etag: '*', properties: { desired: { building: '43', floor: 3 } } };
    const created = (await jobClient.scheduleTwinUpdate(jobId, condition, patch, new Date(), 60)).jobStatus;
    const finished = await waitFor(jobId);
    return { created: jobJson(created), finished: jobJson(finished), devices: await deviceResults(jobId) };
  },

  async list_jobs({ jobType, jobStatus, pageSize }) {
    const query = jobClient.createQuery(jobType, jobStatus, pageSize);
    const jobs = [];
    let pages = 0;
    while (query.hasMoreResults) {
      const result = await nextPage(query);
      pages += 1;
      jobs.push(...result.map(jobJson));
    }
    return { jobs, pages };
  },

  async cancel({ jobId, condition }) {
    const methodParams = { methodName: 'lockDoor', payload: null, responseTimeoutInSeconds: 15 };
    const inAnHour = new Date(Date.now() + 3600 * 1000);
    const created = (await jobClient.scheduleDeviceMethod(jobId, condition, methodParams, inAnHour, 60)).jobStatus;
    const canceled = (await jobClient.cancelJob(jobId)).jobStatus;
    const now = (await jobClient.getJob(jobId)).jobStatus;
    return { created: jobJson(created), canceled: jobJson(canceled), now: jobJson(now) };
  },
};

flows[process.argv[2]](JSON.parse(process.argv[3] || '{}'))
  .then((seen) => {
    console.log(JSON.stringify(seen));
    process.exit(0);
  })
  .catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    if (err && err.responseBody) console.error(err.responseBody);
    process.exit(1);
  });

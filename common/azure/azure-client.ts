import type { ContainerClient } from '@azure/storage-blob';
import { describeCause } from '../describe-cause.js';
import { redact } from './redact.js';

/** The SDK's retry policy for every request of a client (see the SDK's StorageRetryOptions). */
export interface AzureRetryOptions {
  /** Attempts per request, including the first. */
  maxTries: number;
  /** Longest a single attempt may take before it is retried, in ms. */
  tryTimeoutMs: number;
  /** First delay between attempts, doubled each retry, in ms. */
  retryDelayMs: number;
  /** Longest delay between attempts, in ms. */
  maxRetryDelayMs: number;
}

/** Options of `openAzureContainer`. */
export interface OpenAzureContainerOptions {
  /** Retry policy. Default: the SDK's. */
  retry?: AzureRetryOptions;
  /** The caller's error when no connection string was given. */
  missingCredentials: () => Error;
  /** The caller's error when the SDK cannot use the connection string; `detail` is redacted. */
  invalidCredentials: (detail: string, cause: unknown) => Error;
}

/**
 * A client for one container. The SDK is loaded here, on first use, so a process that never touches
 * an `az://` URL does not pay for it (about 20 MiB of RSS). Opens no connection.
 */
export async function openAzureContainer(connectionString: string | undefined, container: string, options: OpenAzureContainerOptions): Promise<ContainerClient> {
  if (connectionString === undefined || connectionString === '') throw options.missingCredentials();
  const { BlobServiceClient } = await import('@azure/storage-blob');
  const retry = options.retry;
  try {
    const service = BlobServiceClient.fromConnectionString(
      connectionString,
      retry && {
        retryOptions: { maxTries: retry.maxTries, tryTimeoutInMs: retry.tryTimeoutMs, retryDelayInMs: retry.retryDelayMs, maxRetryDelayInMs: retry.maxRetryDelayMs },
      },
    );
    return service.getContainerClient(container);
  } catch (err) {
    // The SDK's messages name the bad part ("Invalid AccountKey…"); redacted in case one quotes it.
    throw options.invalidCredentials(redact(describeCause(err)), err);
  }
}

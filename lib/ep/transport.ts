/**
 * The MPI transport plug-in (native/mpi/, built by `npm run build:mpi` into
 * build-mpi/libmoe_mpi.so): found and loaded at run time like the CUDA
 * plug-in, with the reason when it cannot be.
 */
import * as path from 'node:path';
import { native, PACKAGE_ROOT } from '../native';

export interface TransportInfo {
  name: 'mpi' | 'nccl';
  available: boolean;
  /** Why it is unavailable ('usable' when it is). */
  reason: string;
  /** The plug-in's path, when one was found. */
  path?: string;
}

/** Where the MPI plug-in may be: MOE_MPI_PLUGIN, beside a prebuilt addon, or build-mpi/. */
export function mpiPluginCandidates(): string[] {
  if (process.env.MOE_MPI_PLUGIN) return [process.env.MOE_MPI_PLUGIN];
  return [
    path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`, 'libmoe_mpi.so'),
    path.join(PACKAGE_ROOT, 'build-mpi', 'libmoe_mpi.so'),
  ];
}

let mpi: TransportInfo | undefined;

/** The MPI transport's status (the plug-in is loaded once, on first use; loading it does not initialize MPI). */
export function mpiTransport(): TransportInfo {
  if (!mpi) mpi = { name: 'mpi', ...native().epLoad(mpiPluginCandidates()) };
  return mpi;
}

let nccl: TransportInfo | undefined;

/**
 * NCCL, for exchanges between GPUs: found at run time (libnccl.so.2, or
 * MOE_NCCL_LIBRARY); its communicator is made over MPI by initNccl().
 */
export function ncclTransport(): TransportInfo {
  if (!nccl) {
    const { available, reason } = native().epNcclProbe();
    nccl = { name: 'nccl', available, reason };
  }
  return nccl;
}

import { gemmSuite } from './helpers/gemm-suite';

gemmSuite('default');

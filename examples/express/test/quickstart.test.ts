import { describeQuickstart } from './quickstart-scenario.js';

describeQuickstart('express', 4000);

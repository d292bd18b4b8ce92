import { describeQuickstart } from './quickstart-scenario.js';

describeQuickstart('express');
